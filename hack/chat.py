"""Send one chat completion to a Capstan Deployment and print the reply as JSON.

Standard library only: `make demo` runs it in a pod (`python -c "$(cat hack/chat.py)" URL MODEL
MESSAGE`), where the Deployment's in-cluster URL resolves through the pod's /etc/hosts, as it
would for any client in the cluster. Retries connection errors for a while: a just-Ready server's
name may take a moment to appear in the pod's hosts file.
"""

import json
import sys
import time
import urllib.error
import urllib.request

DEADLINE_S = 60


def chat(base_url: str, model: str, message: str) -> dict:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": message}],
        "max_tokens": 48,
        "temperature": 0,  # greedy: the reply the Evaluation scored for this question
    }
    req = urllib.request.Request(
        base_url.rstrip("/") + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    end = time.monotonic() + DEADLINE_S
    while True:
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            sys.exit(f"{req.full_url}: HTTP {exc.code}: {exc.read().decode(errors='replace')}")
        except (urllib.error.URLError, ConnectionError) as exc:
            if time.monotonic() > end:
                sys.exit(f"{req.full_url}: no answer within {DEADLINE_S} s: {exc}")
            time.sleep(1)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: chat.py BASE_URL MODEL MESSAGE")
    reply = chat(*sys.argv[1:])
    print(json.dumps({"model": reply["model"], "answer": reply["choices"][0]["message"]["content"]}))
