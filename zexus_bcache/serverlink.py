"""What the client and the warm server share: where the socket lives, the compatibility token, the wire format.

This module is on the client's path to the socket, so it imports only what Python loads at start-up
plus ``socket`` and ``fcntl``: nothing of zexus, SQLAlchemy, click or rich.

* The private directory: ``$ZEXUS_BCACHE_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/zexus-bcache``, else
  ``/tmp/zexus-bcache-$UID``; created 0700 and refused unless it is ours and private (git's
  ``safe.directory`` rule): another user must not be able to plant a socket we would send our files to.
* The token: everything a server fixed when it imported zexus (Python, zexus and zexus_bcache builds,
  the ``ZEXUS_*`` settings zexus reads at import, ``PYTHON*``, locale, ``$HOME`` and zexus's config
  file). Each token gets its own socket (``s-<digest>.sock``), so a server is only ever asked to run
  programs for clients that would have imported zexus exactly as it did; the full token is also
  compared at connect.
* The wire: one request ``MAGIC, length, NUL-separated fields`` with the client's file descriptors
  attached (SCM_RIGHTS); answers are ASCII lines (see server.py).
"""

from __future__ import annotations

import os
import socket
import stat
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

ENV_SWITCH = "ZEXUS_BCACHE_SERVER"  # "0": never use the server
ENV_RUNTIME_DIR = "ZEXUS_BCACHE_RUNTIME_DIR"
ENV_IDLE = "ZEXUS_BCACHE_SERVER_IDLE"  # seconds without a request before a server exits
DEFAULT_IDLE_S = 600.0
ENV_BUILD_CHECK = "ZEXUS_BCACHE_SERVER_BUILD_CHECK"  # seconds between a server's looks at its own build
DEFAULT_BUILD_CHECK_S = 30.0
MAGIC = b"ZXB1"
MAX_REQUEST = 8 << 20  # argv + environment; Linux's own ARG_MAX-sized limit is far below this
MAX_FDS = 16
# Read by zexus 2.0 when it is imported (module- and class-level os.environ reads; tests/test_server.py
# scans zexus's source again, so a new one fails a test instead of being served stale).
ZEXUS_IMPORT_ENV = ("ZEXUS_VM_WARNINGS", "ZEXUS_ADDRESS_PREFIX")
LOCALE_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "HOME")


class Unavailable(Exception):
    """The server cannot be used for this run (the message says why); run in-process instead."""


def supported() -> bool:
    """Whether this platform can pass file descriptors, check a peer's uid and watch a child (Linux)."""
    return hasattr(socket, "send_fds") and hasattr(socket, "SO_PEERCRED") and hasattr(os, "pidfd_open")


# ------------------------------------------------------------------------------ the private directory


def dir_problem(path: str) -> str | None:
    """Why path is not a directory only we can use (None when it is)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory (a symbolic link or a file)"
    if st.st_uid != os.geteuid():
        return f"{path} is owned by uid {st.st_uid}, not by us (uid {os.geteuid()})"
    if st.st_mode & 0o077:
        return f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):o}, want 700)"
    parent = os.path.dirname(os.path.abspath(path))
    try:
        pst = os.stat(parent)
    except OSError as exc:
        return f"{parent}: {exc.strerror}"
    if pst.st_uid not in (0, os.geteuid()):
        return f"its parent {parent} is owned by uid {pst.st_uid}"
    if pst.st_mode & 0o022 and not pst.st_mode & stat.S_ISVTX:
        return f"its parent {parent} is writable by other users (and not sticky): the directory could be replaced"
    return None


def runtime_dir() -> str:
    """The private directory for sockets, locks and logs (created 0700); Unavailable if it is not private."""
    path = os.environ.get(ENV_RUNTIME_DIR, "").strip()
    if not path:
        xdg = os.environ.get("XDG_RUNTIME_DIR", "").strip()
        if xdg and os.path.isabs(xdg) and dir_problem(xdg) is None:
            path = os.path.join(xdg, "zexus-bcache")
        else:
            path = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"zexus-bcache-{os.geteuid()}")
    path = os.path.abspath(path)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise Unavailable(f"cannot create {path}: {exc.strerror}") from None
    why = dir_problem(path)
    if why:
        raise Unavailable(f"refusing the runtime directory: {why}")
    return path


# ----------------------------------------------------------------------------------------- token


def _stamp(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "-"
    return f"{st.st_mtime_ns}:{st.st_size}"


def _package_dir(name: str) -> str | None:
    """Where ``import name`` finds a regular package: the first sys.path entry holding name/__init__.py."""
    for entry in sys.path:  # what PathFinder does for a regular package, without importing importlib.machinery
        candidate = os.path.join(entry or os.getcwd(), name)
        if os.path.isfile(os.path.join(candidate, "__init__.py")):
            return candidate
    return None


def _installed(name: str) -> str:
    """Where a package is and which build of it (its dist-info and RECORD's stamp, or its files' stamps)."""
    pkg = _package_dir(name)
    if pkg is None:
        return f"{name}=missing"
    parts = [f"{name}={pkg}"]
    site = os.path.dirname(pkg)
    try:
        infos = sorted(e for e in os.listdir(site) if e.startswith(f"{name}-") and e.endswith(".dist-info"))
    except OSError:
        infos = []
    parts += [f"{info}@{_stamp(os.path.join(site, info, 'RECORD'))}" for info in infos]
    return " ".join(parts)


def _own_build() -> str:
    """Our version and every module's stamp: an edited checkout (editable install) is another build."""
    from . import __version__

    stamps = []
    for directory, dirs, files in os.walk(os.path.dirname(os.path.abspath(__file__))):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        stamps += [f"{os.path.join(directory, f)}@{_stamp(os.path.join(directory, f))}" for f in sorted(files)
                   if f.endswith(".py")]  # fmt: skip
    return f"zexus_bcache={__version__} " + " ".join(stamps)


def builds() -> str:
    """Which zexus and zexus_bcache are installed (part of the token): it changes on an upgrade or an edit."""
    return _installed("zexus") + "\n" + _own_build()


def _flags() -> str:
    f = sys.flags
    return (f"O={f.optimize} dev={int(f.dev_mode)} utf8={f.utf8_mode} E={f.ignore_environment} "
            f"s={f.no_user_site} b={f.bytes_warning}")


def token(environ: dict[str, str] | None = None) -> str:
    """What a server fixed at import and a client must match; the same text in both when compatible."""
    env = os.environ if environ is None else environ
    home = env.get("HOME", "")
    lines = [
        f"uid={os.geteuid()}",
        f"python={sys.executable} {sys.version} {sys.implementation.cache_tag} {_flags()}",
        builds(),
        "zexus_config=" + (_stamp(os.path.join(home, ".zexus", "config.json")) if home else "-"),
    ]
    names = sorted({*ZEXUS_IMPORT_ENV, *LOCALE_ENV, *(k for k in env if k.startswith("PYTHON"))})
    lines += [f"{k}={env[k]!r}" for k in names if k in env]
    return "\n".join(lines)


def interpreter_flags() -> list[str]:
    """Command-line flags that give a new interpreter this one's sys.flags (those the token holds)."""
    f = sys.flags
    out = ["-O"] * f.optimize + ["-b"] * f.bytes_warning
    out += ["-E"] if f.ignore_environment else []
    out += ["-s"] if f.no_user_site else []
    out += ["-X", "dev"] if f.dev_mode else []
    return [*out, "-X", f"utf8={f.utf8_mode}"]


class Paths:
    """The files of one token's server inside the runtime directory."""

    def __init__(self, directory: str, tok: str) -> None:
        from _blake2 import blake2b  # hashlib would also load OpenSSL: ~4 ms on the client's path

        self.directory = directory
        self.token = tok
        self.digest = blake2b(tok.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
        base = os.path.join(directory, f"s-{self.digest}")
        self.socket, self.lock, self.pid, self.log = (base + ext for ext in (".sock", ".lock", ".pid", ".log"))
        if len(os.fsencode(self.socket)) >= 108:  # sun_path's size on Linux
            raise Unavailable(f"socket path too long for AF_UNIX ({len(self.socket)} bytes): {self.socket}")

    @classmethod
    def current(cls) -> Paths:
        """This process's token and where its server would be."""
        return cls(runtime_dir(), token())

    def with_digest(self, digest: str) -> Paths:
        """The files of the server named digest (another token's, or a stale server's in the tests)."""
        out = Paths(self.directory, self.token)
        base = os.path.join(self.directory, f"s-{digest}")
        out.digest = digest
        out.socket, out.lock, out.pid, out.log = (base + ext for ext in (".sock", ".lock", ".pid", ".log"))
        return out


def all_paths() -> list[Paths]:
    """Every server's files in the runtime directory, this token's first."""
    mine = Paths.current()
    names = os.listdir(mine.directory)
    digests = sorted({n[2:-5] for n in names if n.startswith("s-") and n.endswith(".sock")})
    return [mine] + [mine.with_digest(d) for d in digests if d != mine.digest]


def lock_held(path: str) -> bool:
    """Whether a live server (or one starting) holds the lock file at path."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


# ------------------------------------------------------------------------------------------ wire


def _peer(sock: socket.socket) -> tuple[int, int]:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)  # struct ucred: pid, uid, gid
    return int.from_bytes(creds[:4], sys.byteorder), int.from_bytes(creds[4:8], sys.byteorder)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket (SO_PEERCRED)."""
    return _peer(sock)[1]


def peer_pid(sock: socket.socket) -> int:
    """The pid of the process that listened (or connected) at the other end (SO_PEERCRED)."""
    return _peer(sock)[0]


def pack(fields: Sequence[bytes]) -> bytes:
    """One request: MAGIC, the payload's length (4 bytes, big-endian), the NUL-separated fields."""
    payload = b"\0".join(fields)
    return MAGIC + len(payload).to_bytes(4, "big") + payload


def read_request(conn: socket.socket) -> tuple[list[bytes], list[int]]:
    """The request's fields and the descriptors that came with it (ValueError when malformed)."""
    data, fds, flags, _ = socket.recv_fds(conn, 1 << 16, MAX_FDS, socket.MSG_CMSG_CLOEXEC)
    try:
        if flags & socket.MSG_CTRUNC:
            raise ValueError("more file descriptors than a run sends")
        buffer = bytearray(data)
        while len(buffer) < 8 or len(buffer) < 8 + int.from_bytes(buffer[4:8], "big"):
            if len(buffer) >= 8 and (buffer[:4] != MAGIC or int.from_bytes(buffer[4:8], "big") > MAX_REQUEST):
                raise ValueError("not a zexus-bcache request")
            more = conn.recv(1 << 16)
            if not more:
                raise ValueError("the request ended early")
            buffer += more
        if buffer[:4] != MAGIC:
            raise ValueError("not a zexus-bcache request")
        return bytes(buffer[8:]).split(b"\0"), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def connect(path: str, timeout: float = 5.0) -> socket.socket:
    """A connection to the server at path whose peer is our own uid (OSError / Unavailable otherwise)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        uid = peer_uid(sock)
        if uid != os.geteuid():
            raise Unavailable(f"the process listening on {path} runs as uid {uid}, not as us")
    except BaseException:
        sock.close()
        raise
    return sock


def read_lines(sock: socket.socket, buffer: bytearray) -> list[bytes] | None:
    """The complete lines that the next recv brings (None at end of stream); a partial line stays in buffer."""
    data = sock.recv(4096)
    if not data:
        return None
    buffer += data
    *lines, rest = bytes(buffer).split(b"\n")
    buffer[:] = rest
    return lines


def ask(paths: Paths, kind: bytes, timeout: float = 5.0) -> list[bytes]:
    """Send a one-line request (ping, stop) to the server at paths; its answer's lines."""
    with connect(paths.socket, timeout) as sock:
        sock.sendall(pack([kind, paths.token.encode("utf-8", "surrogateescape")]))
        buffer = bytearray()
        out: list[bytes] = []
        while (lines := read_lines(sock, buffer)) is not None:
            out += lines
        return out


def spawn(paths: Paths) -> int:
    """Start a detached server for paths' token (its own session; output to its log); its pid."""
    argv = [sys.executable, *interpreter_flags(), "-P", "-m", "zexus_bcache.server", "serve"]
    log_flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, paths.log, log_flags, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    import signal

    reset = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE)
    return os.posix_spawn(sys.executable, argv, os.environ, file_actions=actions, setsid=True, setsigdef=reset)


def ping(paths: Paths, timeout: float = 2.0) -> dict[str, str] | None:
    """The server's answer to ping as a dict (pid, served, running, token, ...); None if none answers."""
    try:
        lines = ask(paths, b"ping", timeout)
    except (OSError, Unavailable):
        return None
    if not lines or not lines[0].startswith(b"O "):
        return None
    return dict(item.split("=", 1) for item in lines[0][2:].decode().split() if "=" in item)
