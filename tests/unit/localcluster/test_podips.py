"""Pod IP allocation that keeps concurrent local clusters on one machine apart."""

import random
import socket

from hack.localcluster.nodeagent import podips

TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100017F:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0200017F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100057F:1F40 0100007F:A8CF 01 00000000:00000000 00:00000000 00000000     0        0 3 1
"""


def test_listening_ips_reads_only_listeners():
    # 127.1.0.1:9090 and 127.1.0.2:8000 listen; 127.5.0.1 only has an established connection.
    assert podips.listening_ips(TABLE) == {"127.1.0.1", "127.1.0.2"}


def test_listening_ips_sees_a_real_listener():
    with socket.socket() as s:
        s.bind(("127.77.0.9", 0))
        s.listen()
        assert "127.77.0.9" in podips.listening_ips()


def test_first_ip_avoids_blocks_another_cluster_listens_in():
    busy = {f"127.{x}.0.1" for x in range(1, 255) if x != 42}
    first = podips.first_ip(busy, random.Random(0))
    assert socket.inet_ntoa(first.to_bytes(4, "big")) == "127.42.0.1"


def test_usable_skips_taken_busy_and_broadcast_addresses():
    assert podips.usable("127.9.0.3", used={"127.9.0.2"}, busy={"127.9.0.4"})
    assert not podips.usable("127.9.0.2", used={"127.9.0.2"}, busy=set())
    assert not podips.usable("127.9.0.4", used=set(), busy={"127.9.0.4"})
    assert not podips.usable("127.9.0.255", used=set(), busy=set())
    assert podips.next_after(podips.LAST) == podips.FIRST
