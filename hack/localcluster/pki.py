"""Certificates and keys for the local control plane (ECDSA P-256: fast to generate)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name(attrs)


class PKI:
    """A CA in `folder` plus leaf certificates signed by it; files are reused when present."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.ca_cert_path = folder / "ca.crt"
        ca_key_path = folder / "ca.key"
        if self.ca_cert_path.exists() and ca_key_path.exists():
            self.ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
            self.ca_cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
        else:
            self.ca_key = _key()
            now = dt.datetime.now(dt.UTC)
            self.ca_cert = (
                x509.CertificateBuilder()
                .subject_name(_name("capstan-local-ca"))
                .issuer_name(_name("capstan-local-ca"))
                .public_key(self.ca_key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
                .sign(self.ca_key, hashes.SHA256())
            )
            ca_key_path.write_bytes(_pem_key(self.ca_key))
            self.ca_cert_path.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))

    def leaf(
        self,
        name: str,
        cn: str,
        orgs: tuple[str, ...] = (),
        server: bool = False,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> tuple[Path, Path]:
        """Return (cert path, key path) for a client or serving certificate, creating it once."""
        crt, key_path = self.folder / f"{name}.crt", self.folder / f"{name}.key"
        if crt.exists() and key_path.exists():
            return crt, key_path
        key = _key()
        now = dt.datetime.now(dt.UTC)
        usage = (
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            if server
            else [ExtendedKeyUsageOID.CLIENT_AUTH]
        )
        b = (
            x509.CertificateBuilder()
            .subject_name(_name(cn, orgs))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        )
        if server:
            sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(self.ca_key, hashes.SHA256())
        key_path.write_bytes(_pem_key(key))
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return crt, key_path

    def service_account_key(self) -> Path:
        """Key pair the API server signs service-account tokens with (public half derived)."""
        path = self.folder / "sa.key"
        if not path.exists():
            path.write_bytes(_pem_key(_key()))
        pub = self.folder / "sa.pub"
        if not pub.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), None)
            pub.write_bytes(
                key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        return path
