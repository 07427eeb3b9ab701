"""A small PKI in the data directory: one CA, the controller's certificate, per-chassis and client certificates.

    sdn-controller pki init [--data-dir D]            CA (D/pki/ca.key, ca.crt) and the controller's certificate
    sdn-controller pki issue-chassis NAME [--out DIR]  NAME.key + NAME.crt (CN = NAME = the chassis id), ca.crt
    sdn-controller pki issue-client NAME [--out DIR]   the same for a gRPC client

Everything is made with the `cryptography` library (ECDSA P-256, SHA-256). Private keys are written 0600 and
never logged. A chassis certificate's CN and its DNS SAN are the chassis id: the OpenFlow listener programs a
switch as chassis X only when its certificate names X (controller/ofapp.py).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import logging
import os
import re
import socket
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
CA_DAYS = 3650
LEAF_DAYS = 825
ORGANIZATION = "sdn-controller"


@dataclass(frozen=True)
class TlsFiles:
    """A private key, its certificate and the CA that verifies peers (paths, PEM)."""

    key: Path
    cert: Path
    ca: Path


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600 from the first byte on (never readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)  # a little clock skew


def _san(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise ValueError(f"bad certificate name {name!r}: letters, digits, '.', '_' and '-', at most 63")
    return name


class Pki:
    """The CA in `root` (a data directory's `pki/`) and the certificates it issues."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    def exists(self) -> bool:
        return self.ca_cert.exists() and self.ca_key.exists()

    def init(self) -> bool:
        """Create the CA unless it exists; True if it was created."""
        if self.exists():
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{ORGANIZATION} CA"),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now())
            .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(self.ca_key, _key_pem(key))
        _write_public(self.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
        return True

    def _issue(
        self, key_path: Path, cert_path: Path, cn: str, sans: Sequence[str], server: bool, client: bool
    ) -> TlsFiles:
        if not self.exists():
            raise FileNotFoundError(f"no CA in {self.root}: run `sdn-controller pki init` first")
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                        x509.NameAttribute(NameOID.COMMON_NAME, cn),
                    ]
                )
            )
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now())
            .not_valid_after(_now() + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(_san(sans)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(key))
        _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return TlsFiles(key_path, cert_path, self.ca_cert)

    def issue_chassis(self, name: str, out: Path | None = None) -> TlsFiles:
        """A chassis's certificate (CN and DNS SAN = its id): the client of OpenFlow, the server of OVSDB."""
        check_name(name)
        d = Path(out) if out is not None else self.root / "chassis"
        files = self._issue(d / f"{name}.key", d / f"{name}.crt", name, [name], server=True, client=True)
        return self._with_ca_copy(files, d, out)

    def issue_client(self, name: str, out: Path | None = None) -> TlsFiles:
        """A gRPC client's certificate (CN = NAME); optional for clients: bearer tokens authorize calls."""
        check_name(name)
        d = Path(out) if out is not None else self.root / "clients"
        files = self._issue(d / f"{name}.key", d / f"{name}.crt", name, [name], server=False, client=True)
        return self._with_ca_copy(files, d, out)

    def _with_ca_copy(self, files: TlsFiles, d: Path, out: Path | None) -> TlsFiles:
        if out is None:
            return files
        _write_public(d / "ca.crt", self.ca_cert.read_bytes())  # what the holder verifies the controller with
        return TlsFiles(files.key, files.cert, d / "ca.crt")

    @property
    def controller_files(self) -> TlsFiles:
        return TlsFiles(self.root / "controller.key", self.root / "controller.crt", self.ca_cert)

    def ensure_controller(self, names: Iterable[str]) -> TlsFiles:
        """The controller's certificate (server and client: OpenFlow and gRPC listener, OVSDB client), valid
        for `names` (host names and addresses clients connect to); issued again when a name is missing."""
        wanted = list(dict.fromkeys(["localhost", "127.0.0.1", "::1", socket.gethostname(), *names]))
        files = self.controller_files
        if files.cert.exists() and files.key.exists():
            cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
            try:
                have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                present = {str(v) for v in have.get_values_for_type(x509.DNSName)} | {
                    str(v) for v in have.get_values_for_type(x509.IPAddress)
                }
            except x509.ExtensionNotFound:
                present = set()
            expires = cert.not_valid_after_utc
            fresh = expires - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=30)
            if fresh and {str(ipaddress.ip_address(n)) if _is_ip(n) else n for n in wanted} <= present:
                return files
        log.info("issuing the controller's certificate for %s", ", ".join(wanted))
        return self._issue(files.key, files.cert, "sdn-controller", wanted, server=True, client=True)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def peer_common_name(cert: dict | None) -> str | None:  # type: ignore[type-arg]
    """The subject CN of a certificate as `ssl.SSLSocket.getpeercert()` returns it (None if none)."""
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def main(argv: Sequence[str], default_data_dir: str = "data") -> int:
    """`sdn-controller pki ...`."""
    ap = argparse.ArgumentParser(
        prog="sdn-controller pki",
        description="The controller's certificate authority "
        "(in DATA_DIR/pki): create it, issue chassis and client certificates.",
    )
    ap.add_argument(
        "--data-dir", default=default_data_dir, help="the controller's data directory (default ./data)"
    )
    sub = ap.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create the CA and the controller's certificate (kept if they exist)")
    init.add_argument(
        "--san",
        action="append",
        default=[],
        help="host name or address the controller's certificate must be valid for (repeatable)",
    )
    for cmd, what in (
        ("issue-chassis", "a chassis (NAME = its chassis id)"),
        ("issue-client", "a gRPC client"),
    ):
        p = sub.add_parser(cmd, help=f"issue a key and certificate for {what}")
        p.add_argument("name")
        p.add_argument(
            "--out",
            type=Path,
            help="directory for NAME.key, NAME.crt and ca.crt "
            "(default DATA_DIR/pki/chassis or DATA_DIR/pki/clients)",
        )
    args = ap.parse_args(list(argv))
    pki = Pki(Path(args.data_dir) / "pki")
    try:
        if args.command == "init":
            created = pki.init()
            files = pki.ensure_controller(args.san)
            print(f"{'created' if created else 'kept'} CA {pki.ca_cert}; controller certificate {files.cert}")
            return 0
        issue = pki.issue_chassis if args.command == "issue-chassis" else pki.issue_client
        files = issue(args.name, args.out)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"key {files.key} (0600)\ncertificate {files.cert}\nCA {files.ca}")
    return 0
