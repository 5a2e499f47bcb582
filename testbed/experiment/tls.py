"""Who may use a remote cluster: mutual TLS with a private CA, and the rule for plain tcp://.

A Dask scheduler runs whatever function a client or worker sends it, and a `testbed worker`
runs the cells as root: Dask's tcp:// comm authenticates nobody, so anyone who can reach the
scheduler's port could run code as root on every worker. `testbed cluster certs DIR` makes a CA
of the cluster's own and a certificate for each role; the scheduler, every worker and the
client then accept only peers whose certificate that CA signed (Dask's TLS asks for the
peer's certificate on both sides). The CA's private key is not kept: nobody, not even a
worker holding the folder, can sign another certificate; a new set is made by running the
command again (and copying the new folder to every host).

Files in DIR: ca.pem (the CA's certificate), scheduler.pem, worker.pem and client.pem (each a
certificate and its private key, mode 0600). Every file is checked before it is used.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.errors import ConfigError

ROLES = ("scheduler", "worker", "client")
CA_FILE = "ca.pem"
DAYS = 365
MAKE_HINT = "make a set with `testbed cluster certs DIR`"
REQUIRE_ENCRYPTION = "distributed.comm.require-encryption"


@dataclass(frozen=True)
class TlsFiles:
    """A role's checked files: the CA's certificate and the role's certificate + key."""

    role: str
    ca: Path
    pem: Path  # certificate and key in one file

    def security(self) -> Any:
        """Dask's Security for this role: TLS only (require_encryption), mutual."""
        from distributed.security import Security

        return Security(  # type: ignore[no-untyped-call]
            require_encryption=True,
            tls_ca_file=str(self.ca),
            **{f"tls_{self.role}_cert": str(self.pem), f"tls_{self.role}_key": str(self.pem)},
        )

    def config(self) -> dict[str, Any]:
        """dask.config for a process that holds certificates: no plain comm at all."""
        return {REQUIRE_ENCRYPTION: True}

    def scheduler_argv(self) -> list[str]:
        """The TLS options of `dask scheduler` for these files."""
        return ["--protocol", "tls", "--tls-ca-file", str(self.ca), "--tls-cert", str(self.pem),
                "--tls-key", str(self.pem)]  # fmt: skip


def make_certs(folder: Path, days: int = DAYS, hosts: Sequence[str] = (),
               now: datetime.datetime | None = None) -> list[Path]:  # fmt: skip
    """A new CA and a certificate per role in FOLDER (created 0700 if missing; files already
    there are never overwritten). hosts: names and addresses put in the scheduler's and workers'
    certificates (Dask does not check them; other TLS clients may)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if days < 1:
        raise ConfigError("--days", str(days), "valid: a whole number of days >= 1")
    targets = [folder / CA_FILE] + [folder / f"{r}.pem" for r in ROLES]
    there = [p for p in targets if p.exists()]
    if there:
        raise ConfigError(str(there[0]), "", "exists; certificates are never overwritten: "
                          "choose an empty folder (then copy it to every host)")  # fmt: skip
    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rtc-testbed cluster CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    names = _alt_names(hosts)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = [_write(folder / CA_FILE, ca.public_bytes(serialization.Encoding.PEM), 0o644)]
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"rtc-testbed {role}")])
            )
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(  # each role both listens and connects (workers talk to each other)
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if names and role != "client":
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        written.append(_write(folder / f"{role}.pem", pem, 0o600))
    return written


def _alt_names(hosts: Sequence[str]) -> list[Any]:
    from cryptography import x509

    out: list[Any] = []
    for h in dict.fromkeys([*hosts, socket.gethostname(), "localhost", "127.0.0.1", "::1"]):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def _write(path: Path, data: bytes, mode: int) -> Path:
    """Create PATH with MODE from the start (a key is never readable by others, not even for a
    moment), refusing to follow or replace anything already there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, mode)  # the umask may have taken bits off ca.pem
    return path


def check_certs(folder: Path, role: str, now: datetime.datetime | None = None) -> TlsFiles:
    """ROLE's files in FOLDER, checked as a TLS handshake would (and a little more): present,
    the key not readable by others, the key matching its certificate, the certificate signed by
    the folder's CA, both within their validity. Any problem: one ConfigError naming the file."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    if role not in ROLES:
        raise ValueError(role)
    if not folder.is_dir():
        raise ConfigError("--certs", str(folder), f"not a folder; {MAKE_HINT}")
    ca_path, pem_path = folder / CA_FILE, folder / f"{role}.pem"
    for p in (ca_path, pem_path):
        if not p.is_file():
            raise ConfigError(str(p), "", f"not found; {MAKE_HINT} and copy the folder here")
    mode = stat.S_IMODE(pem_path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(str(pem_path), "", f"holds a private key readable by others "
                          f"(mode {mode:04o}); run `chmod 600 {pem_path}`")  # fmt: skip
    try:
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    except ValueError:
        raise ConfigError(str(ca_path), "", f"not a PEM certificate; {MAKE_HINT}") from None
    data = pem_path.read_bytes()
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ConfigError(str(pem_path), "", f"holds no PEM certificate; {MAKE_HINT}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(str(pem_path), "", "holds no unencrypted private key (it must hold "
                          f"the certificate and its key); {MAKE_HINT}") from None  # fmt: skip
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = serialization.Encoding.PEM
    if key.public_key().public_bytes(pem, spki) != cert.public_key().public_bytes(pem, spki):
        raise ConfigError(str(pem_path), "", "its private key does not belong to its "
                          f"certificate; {MAKE_HINT}")  # fmt: skip
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise ConfigError(str(pem_path), "", f"not signed by the CA in {ca_path} "
                          f"({type(e).__name__}); use the ca.pem and {role}.pem made "
                          "together by one `testbed cluster certs`") from None  # fmt: skip
    when = now or datetime.datetime.now(datetime.UTC)
    for path, c in ((ca_path, ca), (pem_path, cert)):
        if when > c.not_valid_after_utc:
            raise ConfigError(str(path), "", f"expired on {c.not_valid_after_utc:%Y-%m-%d %H:%M} "
                              f"UTC; {MAKE_HINT} (a new folder) and copy it to every host")  # fmt: skip
        if when < c.not_valid_before_utc:
            start = f"{c.not_valid_before_utc:%Y-%m-%d %H:%M}"
            raise ConfigError(str(path), "", f"not valid before {start} UTC: is this host's "
                              "clock right?")  # fmt: skip
    return TlsFiles(role, ca_path, pem_path)


def scheme(address: str) -> str:
    """'tls' or 'tcp' (Dask's default for HOST:PORT)."""
    return address.split("://", 1)[0] if "://" in address else "tcp"


def is_loopback(address: str) -> bool:
    """Does ADDRESS (tcp://HOST:PORT) name this machine's loopback?"""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cluster_files(option: str, address: str, certs: Path | None, insecure: bool,
                  role: str) -> TlsFiles | None:  # fmt: skip
    """The checked certificates to reach the scheduler at ADDRESS as ROLE, or None for plain
    tcp://, which is allowed only on loopback or when the user said --insecure."""
    kind = scheme(address)
    if kind == "tls":
        if certs is None:
            raise ConfigError(option, address, f"a tls:// scheduler needs the cluster's "
                              f"certificates: add --certs DIR ({MAKE_HINT})")  # fmt: skip
        return check_certs(certs, role)
    if certs is not None:
        raise ConfigError(option, address, "--certs is given but the address is plain tcp://; "
                          "write it tls://HOST:PORT")  # fmt: skip
    if not (is_loopback(address) or insecure):
        raise ConfigError(option, address, "refusing a plain tcp:// scheduler off this machine: "
                          "anyone who reaches its port can run code as root on the workers; use "
                          f"tls:// with --certs DIR ({MAKE_HINT}), or --insecure on a network "
                          "only you use")  # fmt: skip
    return None
