"""Throwaway TLS material for tests: a CA, a server and a client certificate."""

from __future__ import annotations

import dataclasses
import functools
import os
import secrets
import shutil
import ssl
import subprocess
from typing import ClassVar, Literal


@dataclasses.dataclass(frozen=True)
class TLSConfig:
    """TLS settings of a :class:`RedisServer`.

    ``cert_file``/``key_file`` are the server's certificate and key, ``ca_file`` the CA that
    signs client certificates (needed unless ``auth_clients`` is ``"no"``; it is also what the
    helpers :meth:`RedisServer.command` and :meth:`client_context` trust). ``auth_clients`` is
    the server's ``tls-auth-clients``. ``client_cert_file``/``client_key_file``, when given,
    are presented by the helpers (necessary with ``auth_clients="yes"``).
    """

    cert_file: str
    key_file: str
    ca_file: str | None = None
    auth_clients: Literal["no", "optional", "yes"] = "no"
    client_cert_file: str | None = None
    client_key_file: str | None = None

    def __post_init__(self) -> None:
        if self.auth_clients not in ("no", "optional", "yes"):
            raise ValueError(f"auth_clients must be 'no', 'optional' or 'yes': {self.auth_clients}")
        if self.auth_clients != "no" and self.ca_file is None:
            raise ValueError("auth_clients other than 'no' needs ca_file")

    def server_args(self) -> list[str]:
        """The server flags for these settings (without the ports)."""
        args = ["--tls-cert-file", self.cert_file, "--tls-key-file", self.key_file]
        if self.ca_file is not None:
            args += ["--tls-ca-cert-file", self.ca_file]
        args += ["--tls-auth-clients", self.auth_clients]
        return args

    def client_context(self, *, client_cert: bool = True) -> ssl.SSLContext:
        """An SSL context trusting ``ca_file`` (or the system CAs), presenting the client
        certificate when there is one and ``client_cert`` is true."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if client_cert and self.client_cert_file is not None:
            ctx.load_cert_chain(self.client_cert_file, self.client_key_file)
        return ctx


@dataclasses.dataclass(frozen=True)
class TestCertificates:
    """Files made by :func:`make_test_certificates` (PEM, keys unencrypted)."""

    __test__: ClassVar[bool] = False  # not a pytest test class, despite the name

    directory: str
    ca_file: str
    ca_key_file: str
    server_cert_file: str
    server_key_file: str
    client_cert_file: str
    client_key_file: str

    def tls_config(self, auth_clients: Literal["no", "optional", "yes"] = "optional") -> TLSConfig:
        """A :class:`TLSConfig` for a server using these certificates."""
        return TLSConfig(
            cert_file=self.server_cert_file,
            key_file=self.server_key_file,
            ca_file=self.ca_file,
            auth_clients=auth_clients,
            client_cert_file=self.client_cert_file,
            client_key_file=self.client_key_file,
        )

    def client_context(self, *, client_cert: bool = True) -> ssl.SSLContext:
        """An SSL context that verifies the server against the test CA (hostname checked:
        the server certificate is valid for ``localhost``, ``127.0.0.1`` and ``::1``), and
        presents the client certificate if ``client_cert``."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if client_cert:
            ctx.load_cert_chain(self.client_cert_file, self.client_key_file)
        return ctx


def _openssl(openssl: str, *args: str, cwd: str) -> None:
    proc = subprocess.run(
        [openssl, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def make_test_certificates(directory: str | os.PathLike[str]) -> TestCertificates:
    """Create a throwaway CA, a server certificate and a client certificate in ``directory``.

    The server certificate has CN ``localhost`` and the SANs ``DNS:localhost``,
    ``IP:127.0.0.1`` and ``IP:::1``; the client certificate has CN ``redismpx-test-client``.
    Keys are EC P-256, valid for 10 years. Needs the ``openssl`` command line (about 40 ms).
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("make_test_certificates needs the `openssl` command line tool")
    out = os.fspath(directory)
    os.makedirs(out, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_ext = ["-addext", "basicConstraints=critical,CA:TRUE"]
    ca_ext += ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    ca_subject = ["-subj", "/CN=redismpx-test-ca", "-days", "3650"]
    _openssl(openssl, "req", "-x509", "-new", *ec, *ca_subject, *ca_ext,
             "-keyout", "ca.key", "-out", "ca.crt", cwd=out)  # fmt: skip
    leaves = {
        "server": ("/CN=localhost", "serverAuth", "DNS:localhost,IP:127.0.0.1,IP:::1"),
        "client": ("/CN=redismpx-test-client", "clientAuth", "DNS:redismpx-test-client"),
    }
    for name, (subject, usage, san) in leaves.items():
        with open(os.path.join(out, f"{name}.ext"), "w") as f:
            f.write(
                "basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                f"extendedKeyUsage={usage}\n"
                f"subjectAltName={san}\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid,issuer\n"
            )
        _openssl(openssl, "req", "-new", *ec, "-subj", subject,
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=out)  # fmt: skip
        _openssl(openssl, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt",
                 "-CAkey", "ca.key", "-set_serial", f"0x{secrets.token_hex(8)}", "-days", "3650",
                 "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=out)  # fmt: skip
    for key in ("ca.key", "server.key", "client.key"):
        os.chmod(os.path.join(out, key), 0o600)
    j = functools.partial(os.path.join, out)
    return TestCertificates(
        directory=out,
        ca_file=j("ca.crt"),
        ca_key_file=j("ca.key"),
        server_cert_file=j("server.crt"),
        server_key_file=j("server.key"),
        client_cert_file=j("client.crt"),
        client_key_file=j("client.key"),
    )
