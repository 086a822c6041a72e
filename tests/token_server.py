"""A local OAuth 2.0 token endpoint, and throwaway service-account keys that use it.

A service-account key names the URL where its holder trades a signed JWT for an access token
(`token_uri`). Pointing that at this server lets a test run google-auth's real refresh of a
key stored in a prefect-gcp GcpCredentials block, with no network: the server checks the JWT's
signature against the key's public half, records its claims, and hands out one fixed token.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

CLIENT_EMAIL = "converter@objectron-wds-test.iam.gserviceaccount.com"


class TokenServer:
    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.token = f"test-access-token-{uuid.uuid4().hex}"
        self.grants: list[dict[str, Any]] = []  # the claims of each verified JWT received
        self.rejected = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def start(self) -> TokenServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def service_account_info(self, project: str = "objectron-wds-test") -> dict[str, str]:
        """A key of a service account that exists nowhere; its tokens come from this server."""
        from cryptography.hazmat.primitives import serialization

        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {
            "type": "service_account",
            "project_id": project,
            "private_key_id": "0" * 40,
            "private_key": pem,
            "client_email": CLIENT_EMAIL,
            "client_id": "1",
            "token_uri": self.url,
        }

    def write_key_file(self, path: Path) -> Path:
        path.write_text(json.dumps(self.service_account_info()))
        return path

    def _verified_claims(self, assertion: str) -> dict[str, Any] | None:
        from cryptography.hazmat.primitives import serialization
        from google.auth import jwt

        public_pem = self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        try:
            # google-auth addresses the JWT to Google's token URL whatever token_uri says: no
            # audience check.
            claims = jwt.decode(assertion, certs=[public_pem], verify=True)
        except ValueError:
            return None
        return dict(claims)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                claims = self._claims(form)
                if claims is None:
                    server.rejected += 1
                    self._reply(400, {"error": "invalid_grant"})
                    return
                server.grants.append(claims)
                self._reply(
                    200, {"access_token": server.token, "expires_in": 3600, "token_type": "Bearer"}
                )

            def _claims(self, form: dict[str, list[str]]) -> dict[str, Any] | None:
                grant = form.get("grant_type", [""])[0]
                if grant != "urn:ietf:params:oauth:grant-type:jwt-bearer":
                    return None
                return server._verified_claims(form.get("assertion", [""])[0])

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
