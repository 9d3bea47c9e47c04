"""The fleet test's network namespaces: they connect, and nothing is left behind, even by a run
killed before its clean-up (its names carry a pid that no longer runs)."""

from __future__ import annotations

import subprocess
import sys

from tests.fleet.netns import NetnsLab

DEAD_PID = 4_000_000  # above pid_max's default: never a live process
SERVER = (
    "import socket; s = socket.create_server(('0.0.0.0', 7777)); c, _ = s.accept(); "
    "c.sendall(b'ok'); c.close()"
)
CLIENT = """
import socket, time
for _ in range(100):
    try:
        print(socket.create_connection(('{ip}', 7777), timeout=1).recv(2).decode())
        break
    except OSError:
        time.sleep(0.05)
"""


def test_namespaces_reach_each_other_and_orphans_are_removed() -> None:
    orphan = NetnsLab(1, pid=DEAD_PID)
    orphan.open()  # then "killed": never closed
    lab = NetnsLab(2)
    try:
        lab.open()
        assert not orphan.leftovers()  # removed by the next lab
        server = subprocess.Popen(
            [*lab.exec_prefix(1), sys.executable, "-c", SERVER], stdout=subprocess.DEVNULL
        )
        client = subprocess.run(
            [*lab.exec_prefix(0), sys.executable, "-c", CLIENT.format(ip=lab.ip(1))],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        server.wait(10)
        assert client.stdout.strip() == "ok", client.stderr
    finally:
        lab.close()
        orphan.close()
    assert not lab.leftovers()
