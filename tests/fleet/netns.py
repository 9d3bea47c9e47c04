"""Network namespaces for the fleet test: one bridge in the root namespace, one namespace per
gateway with a veth into the bridge and its own address (iproute2 ``ip``; needs root or
CAP_NET_ADMIN). ``NetnsLab.close()`` deletes everything it made, also after a failure; names carry
the test process's pid, and a new lab first removes the leftovers of runs whose process is gone
(one that was SIGKILLed before its clean-up ran)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

import pytest

__all__ = ["NetnsLab"]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


@dataclass
class NetnsLab:
    """``size`` namespaces on 10.231.<n>.0/24: the root side is .1, namespace i is .(11 + i)."""

    size: int
    pid: int = field(default_factory=os.getpid)
    namespaces: list[str] = field(default_factory=list)

    @property
    def tag(self) -> int:
        return 20 + self.pid % 200

    @property
    def bridge(self) -> str:
        return f"vgb{self.pid}"

    @property
    def host_ip(self) -> str:
        return f"10.231.{self.tag}.1"

    def ns(self, i: int) -> str:
        return f"vgf{self.pid}p{i}"

    def ip(self, i: int) -> str:
        return f"10.231.{self.tag}.{11 + i}"

    def _veth(self, i: int) -> str:
        return f"vgv{self.pid}p{i}"

    def open(self) -> None:
        if shutil.which("ip") is None:
            pytest.fail("iproute2 is not installed: apt-get install iproute2 (scripts/install.sh)")
        _remove_orphans()
        self.close()
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
        except subprocess.CalledProcessError as exc:
            pytest.fail(f"cannot create network namespaces here (root needed): {exc.stderr}")
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(self.size):
            ns, veth = self.ns(i), self._veth(i)
            _ip("netns", "add", ns)
            self.namespaces.append(ns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")
            _ip("-n", ns, "addr", "add", f"{self.ip(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "route", "add", "default", "via", self.host_ip)

    def exec_prefix(self, i: int) -> list[str]:
        """The command prefix that runs a process inside namespace ``i``."""
        return ["ip", "netns", "exec", self.ns(i)]

    def close(self) -> None:
        for i in range(self.size):
            _ip("netns", "del", self.ns(i), check=False)  # its veth end goes with it
            _ip("link", "del", self._veth(i), check=False)
        _ip("link", "del", self.bridge, check=False)
        self.namespaces.clear()

    def leftovers(self) -> list[str]:
        """Names of this lab still present (for the test's own clean-up check)."""
        names = _ip("netns", "list", check=False).stdout
        links = _ip("-o", "link", "show", check=False).stdout
        out = [self.ns(i) for i in range(self.size) if self.ns(i) in names]
        return out + [n for n in (self.bridge,) if f" {n}:" in links or f" {n}@" in links]


def _remove_orphans() -> None:
    """Namespaces and bridges of earlier labs whose test process no longer runs."""
    names = _ip("netns", "list", check=False).stdout.split()
    links = re.findall(
        r"^\d+: (vg[bv]\d+(?:p\d+)?)[@:]", _ip("-o", "link", "show", check=False).stdout, re.M
    )
    for name in [*names, *links]:
        match = re.fullmatch(r"vg([bfv])(\d+)(?:p\d+)?", name)
        if match is None or _is_alive(int(match.group(2))):
            continue
        if match.group(1) == "f":
            _ip("netns", "del", name, check=False)
        else:
            _ip("link", "del", name, check=False)


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
