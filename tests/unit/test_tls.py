"""The cluster's certificates (testbed.experiment.tls): made right, and every bad file refused
in one line naming it. Pure: files in a temporary folder, no sockets (the real handshakes are
in tests/system/test_cluster_tls.py)."""

from __future__ import annotations

import datetime
import os
import shutil
import ssl
import stat
from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.experiment.tls import ROLES, check_certs, cluster_files, is_loopback, make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs") / "set"
    make_certs(folder)
    return folder


def _copy(certs: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(certs, dst)
    return dst


def test_a_set_has_a_ca_and_a_private_pem_per_role(certs: Path) -> None:
    assert sorted(p.name for p in certs.iterdir()) == sorted(
        ["ca.pem", *(f"{r}.pem" for r in ROLES)]
    )
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700
    for role in ROLES:
        assert stat.S_IMODE((certs / f"{role}.pem").stat().st_mode) == 0o600
        files = check_certs(certs, role)
        assert files.pem == certs / f"{role}.pem"
    assert "PRIVATE KEY" not in (certs / "ca.pem").read_text()  # the CA's key is not kept


def test_python_ssl_verifies_each_role_against_the_ca(certs: Path) -> None:
    """What Dask's TLS does with the files: a context with the CA that loads the role's pem."""
    for role in ROLES:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs / "ca.pem"))
        ctx.load_cert_chain(str(certs / f"{role}.pem"))  # raises when key and cert disagree


def test_security_requires_encryption_and_names_the_role(certs: Path) -> None:
    sec = check_certs(certs, "worker").security()
    assert sec.require_encryption is True
    assert sec.tls_worker_cert == str(certs / "worker.pem")
    assert sec.tls_ca_file == str(certs / "ca.pem")
    assert check_certs(certs, "client").config() == {"distributed.comm.require-encryption": True}


def test_never_overwrites(certs: Path) -> None:
    with pytest.raises(ConfigError, match=r"ca.pem: exists; certificates are never overwritten"):
        make_certs(certs)


def test_missing_files(certs: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        check_certs(tmp_path / "nowhere", "client")
    folder = _copy(certs, tmp_path)
    (folder / "client.pem").unlink()
    with pytest.raises(ConfigError, match=r"client.pem: not found; make a set with"):
        check_certs(folder, "client")


def test_a_key_readable_by_others(certs: Path, tmp_path: Path) -> None:
    folder = _copy(certs, tmp_path)
    os.chmod(folder / "worker.pem", 0o640)
    with pytest.raises(ConfigError) as e:
        check_certs(folder, "worker")
    assert str(e.value) == (f"{folder}/worker.pem: holds a private key readable by others "
                            f"(mode 0640); run `chmod 600 {folder}/worker.pem`")  # fmt: skip


def test_a_certificate_of_another_ca(certs: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    make_certs(other)
    folder = _copy(certs, tmp_path)
    shutil.copy(other / "client.pem", folder / "client.pem")
    with pytest.raises(ConfigError, match=r"client.pem: not signed by the CA in"):
        check_certs(folder, "client")


def test_a_key_that_is_not_the_certificates(certs: Path, tmp_path: Path) -> None:
    folder = _copy(certs, tmp_path)
    cert = (certs / "client.pem").read_text().split("-----BEGIN PRIVATE KEY-----")[0]
    key = "-----BEGIN PRIVATE KEY-----" + (certs / "worker.pem").read_text().split(
        "-----BEGIN PRIVATE KEY-----")[1]  # fmt: skip
    (folder / "client.pem").write_text(cert + key)
    with pytest.raises(ConfigError, match="its private key does not belong to its certificate"):
        check_certs(folder, "client")
    (folder / "client.pem").write_text(cert)
    with pytest.raises(ConfigError, match="holds no unencrypted private key"):
        check_certs(folder, "client")
    (folder / "ca.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"ca.pem: not a PEM certificate"):
        check_certs(folder, "client")


def test_expired_and_not_yet_valid(tmp_path: Path) -> None:
    then = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    make_certs(tmp_path / "old", days=30, now=then)
    with pytest.raises(ConfigError, match=r"ca.pem: expired on 2020-01-30 23:55 UTC"):
        check_certs(tmp_path / "old", "scheduler")
    with pytest.raises(ConfigError, match=r"not valid before .* is this host's clock right"):
        check_certs(tmp_path / "old", "scheduler", now=then - datetime.timedelta(days=1))
    assert check_certs(tmp_path / "old", "scheduler", now=then).role == "scheduler"
    with pytest.raises(ConfigError, match="--days: 0: valid: a whole number of days >= 1"):
        make_certs(tmp_path / "none", days=0)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("tcp://127.0.0.1:8786", True), ("127.0.0.5:1", True), ("tcp://localhost:8786", True),
     ("tcp://[::1]:8786", True), ("tcp://10.0.0.1:8786", False), ("tls://lab-host:8786", False)],
)  # fmt: skip
def test_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_who_may_use_plain_tcp(certs: Path) -> None:
    assert cluster_files("--cluster", "tcp://127.0.0.1:8786", None, False, "client") is None
    assert cluster_files("--cluster", "tcp://10.0.0.1:8786", None, True, "client") is None
    with pytest.raises(ConfigError, match="refusing a plain tcp:// scheduler off this machine"):
        cluster_files("SCHEDULER", "10.0.0.1:8786", None, False, "worker")
    with pytest.raises(ConfigError, match="a tls:// scheduler needs the cluster's certificates"):
        cluster_files("SCHEDULER", "tls://10.0.0.1:8786", None, False, "worker")
    with pytest.raises(ConfigError, match="--certs is given but the address is plain tcp://"):
        cluster_files("SCHEDULER", "tcp://127.0.0.1:8786", certs, False, "worker")
    files = cluster_files("SCHEDULER", "tls://10.0.0.1:8786", certs, False, "worker")
    assert files is not None and files.role == "worker"
