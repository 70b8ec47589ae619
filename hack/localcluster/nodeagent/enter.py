"""The last step of starting a container from an image, run by the host's Python inside the
container's mount namespace: chroot into the root filesystem, drop to the container's user,
and exec its command with its environment. Standard library only; started with `python -I`.

Usage: python -I enter.py SPEC.json   (root, cwd, uid, gid, groups, no_new_privs, argv, env,
error_file). A command that cannot be executed exits 128 with the reason in error_file, as a
container runtime reports StartError."""

import ctypes
import json
import os
import sys

PR_SET_NO_NEW_PRIVS = 38


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    os.unlink(sys.argv[1])  # it holds the container's environment, Secrets included
    err = open(spec["error_file"], "w")  # noqa: SIM115 - opened before chroot (a node path), kept until exec
    argv = spec["argv"]
    try:
        os.chroot(spec["root"])
        os.chdir(spec["cwd"])
        if spec["no_new_privs"]:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        os.setgroups(spec["groups"])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])  # a non-zero uid loses every capability here
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and "/" not in argv[0]:
            reason = f'exec: "{argv[0]}": executable file not found in $PATH'
        else:
            reason = f'exec: "{argv[0]}": {exc.strerror or exc}'
        err.write(reason)
        err.flush()
        print(reason, file=sys.stderr)
        sys.exit(128)


if __name__ == "__main__":
    main()
