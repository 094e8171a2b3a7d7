"""CURVE on the bus: key pairs, the broker's allow-list, and socket options.

With ``BUS.curve.enabled`` every bus socket is encrypted and authenticated
with ZeroMQ's CURVE (``zmq.auth`` certificate files):

- ``meterlink keys`` writes, in ``BUS.curve.keys_dir`` (default
  ``<run_dir>/keys``, mode 0700, files 0600), a key pair for the broker
  (``broker.key`` public, ``broker.key_secret``) and one for each participant:
  ``uart``, ``client``, ``watchdog``, ``resolver``, ``tools`` (status, tap,
  ask, the launcher), and every ``BUS.services``/``EXTENSIONS`` name; each
  participant's public key is also copied to ``keys_dir/allowed/``.
- The broker's sockets are CURVE servers. A ZAP handler in the broker
  (``Allowlist``, run by pyzmq's ``ThreadAuthenticator``) lets in only the
  public keys found in ``allowed/``; a refused peer is logged and counted
  (``auth.refused``). The directory is read again when an unknown key
  knocks and the directory changed since it was read, so adding a key needs
  no restart of the broker (a refused peer, though, does not retry on its
  own: restart it once its key is allowed).
- Every other socket is a CURVE client: its own pair ``<name>.key_secret``
  and the broker's public key ``broker.key``. A worker on another machine
  needs only those two files and the broker's address
  (``meterlink keys --only resolver``, then copy the files across).

Key files are read once per process. A missing key stops the process with
exit status 2 and a message naming the file (a restart cannot fix it).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from typing import Any

import zmq

log = logging.getLogger("meterlink.keys")

BROKER = "broker"
TOOLS = "tools"  # status, tap, ask and the launcher share one pair
PARTICIPANTS: tuple[str, ...] = ("uart", "client", "watchdog", "resolver", TOOLS)
ALLOWED = "allowed"
ZAP_DOMAIN = "meterlink"


class KeysMissing(Exception):
    """A key file the configuration needs is not there (or cannot be read)."""


def enabled(bus_cfg: dict[str, Any]) -> bool:
    return bool((bus_cfg.get("curve") or {}).get("enabled"))


def keys_dir(bus_cfg: dict[str, Any], run_dir: str) -> str:
    path = (bus_cfg.get("curve") or {}).get("keys_dir") or os.path.join(run_dir, "keys")
    return str(path.replace("{run_dir}", run_dir))


@functools.lru_cache(maxsize=16)
def _load(path: str, secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeysMissing(
            f"BUS.curve: cannot read {path}: {exc}; run `meterlink keys` "
            "(or copy the file from the broker's host)"
        ) from None
    if secret and not secret_key:
        raise KeysMissing(f"BUS.curve: {path} holds no secret key")
    return public, secret_key


def _fatal(exc: KeysMissing) -> SystemExit:
    from common.daemon import fatal

    return fatal(str(exc), 2)


def client(sock: zmq.Socket[Any], bus_cfg: dict[str, Any], run_dir: str, name: str) -> None:
    """Make ``sock`` a CURVE client as ``name`` (before it connects); no-op if off."""
    if not enabled(bus_cfg):
        return
    d = keys_dir(bus_cfg, run_dir)
    key_name = name if os.path.exists(os.path.join(d, f"{name}.key_secret")) else _fallback(name)
    try:
        server_public, _ = _load(os.path.join(d, f"{BROKER}.key"), False)
        public, secret = _load(os.path.join(d, f"{key_name}.key_secret"), True)
    except KeysMissing as exc:
        raise _fatal(exc) from None
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_public


#: Tools that talk to a running stack share the ``tools`` pair.
TOOL_NAMES = frozenset({"ask", "status", "tap", "launcher", TOOLS})


def _fallback(name: str) -> str:
    # Resolver workers are resolver-N in supervisord and "resolver" on the bus.
    if name.startswith("resolver"):
        return "resolver"
    return TOOLS if name in TOOL_NAMES else name


def server(sock: zmq.Socket[Any], bus_cfg: dict[str, Any], run_dir: str) -> None:
    """Make ``sock`` a CURVE server with the broker's pair (before it binds)."""
    if not enabled(bus_cfg):
        return
    try:
        public, secret = _load(
            os.path.join(keys_dir(bus_cfg, run_dir), f"{BROKER}.key_secret"), True
        )
    except KeysMissing as exc:
        raise _fatal(exc) from None
    sock.zap_domain = ZAP_DOMAIN.encode()
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True


class Allowlist:
    """ZAP credentials provider: only public keys found in ``allowed/`` get in."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)
        self.refused = 0  # written by the authenticator's thread only
        self.bad_files = 0  # key files that did not load
        self._keys: frozenset[bytes] = frozenset()
        self._stamp: int | None = None
        self._lock = threading.Lock()
        self.reload()

    def reload(self) -> None:
        """Read every ``*.key`` in the directory; a file that does not load (a
        half-copied key, one removed meanwhile) is skipped, logged and counted,
        never fatal: a bad file must not shut everybody out."""
        import zmq.auth

        keys: set[bytes] = set()
        stamp = self._mtime()
        if stamp is not None:
            try:
                names = sorted(n for n in os.listdir(self.directory) if n.endswith(".key"))
            except OSError:
                names = []  # removed since its stamp was taken: no keys, as when missing
            for file in names:
                try:
                    public, _secret = zmq.auth.load_certificate(os.path.join(self.directory, file))
                except (OSError, ValueError) as exc:
                    self.bad_files += 1
                    log.warning("bus key skipped file=%s error=%s", file, exc)
                    continue
                if public:
                    keys.add(public)
        self._keys = frozenset(keys)
        self._stamp = stamp

    def _mtime(self) -> int | None:
        try:
            return os.stat(self.directory).st_mtime_ns
        except OSError:
            return None

    def callback(self, domain: str, key: bytes) -> bool:
        """Never raises (an exception would end pyzmq's ZAP thread, and with it
        every new connection): anything unexpected refuses this one peer."""
        try:
            with self._lock:
                # The directory first: a key removed from it is refused from the
                # next connection on (revocation), not only unknown keys.
                if self._mtime() != self._stamp:
                    self.reload()
                if key in self._keys:
                    return True
                self.refused += 1
                if self.refused <= 10 or self.refused % 1000 == 0:
                    log.warning(
                        "bus peer refused reason=unknown_key key=%s total=%d",
                        key.decode(errors="replace"),
                        self.refused,
                    )
                return False
        except Exception:
            log.exception("bus peer refused reason=allowlist_error")
            return False


def authenticator(ctx: zmq.Context[Any], bus_cfg: dict[str, Any], run_dir: str) -> Any:
    """Start the broker's ZAP handler; returns ``(authenticator, allowlist)`` or None if off."""
    if not enabled(bus_cfg):
        return None
    from zmq.auth.thread import ThreadAuthenticator

    allow = Allowlist(os.path.join(keys_dir(bus_cfg, run_dir), ALLOWED))
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("meterlink.zap"))
    auth.start()
    auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=allow)
    auth.configure_curve_callback("*", credentials_provider=allow)
    return auth, allow


# -- meterlink keys ---------------------------------------------------------------------------


def _private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def generate(directory: str | os.PathLike[str], names: list[str], force: bool = False) -> list[str]:
    """Key pairs for ``names`` in ``directory`` (kept if present unless ``force``).

    Every participant's public key (not the broker's) is copied to
    ``allowed/``. Returns one line per file written or kept.
    """
    import zmq.auth

    directory = os.fspath(directory)
    old = os.umask(0o077)
    try:
        _private_dir(directory)
        allowed = os.path.join(directory, ALLOWED)
        report = []
        for name in names:
            secret = os.path.join(directory, f"{name}.key_secret")
            if os.path.exists(secret) and not force:
                report.append(f"kept    {secret}")
            else:
                zmq.auth.create_certificates(directory, name)
                report.append(f"created {secret}")
            for suffix in (".key", ".key_secret"):
                os.chmod(os.path.join(directory, f"{name}{suffix}"), 0o600)
            if name != BROKER:
                _private_dir(allowed)
                import shutil  # here: `meterlink keys` only, not every process

                public = f"{name}.key"
                shutil.copyfile(os.path.join(directory, public), os.path.join(allowed, public))
                os.chmod(os.path.join(allowed, public), 0o600)
        return report
    finally:
        os.umask(old)


def participants(config: dict[str, Any]) -> list[str]:
    extra = list(config["BUS"].get("services") or ()) + sorted(config.get("EXTENSIONS") or {})
    return [BROKER, *PARTICIPANTS, *(n for n in extra if n not in PARTICIPANTS)]
