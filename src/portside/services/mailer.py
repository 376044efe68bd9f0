"""Outgoing e-mail over SMTP with Quay's ``MAIL_*`` settings."""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from email.message import EmailMessage

from portside.config import PortsideConfig

#: Seconds to wait for the SMTP server.
SMTP_TIMEOUT_S = 15.0


class MailingDisabled(Exception):
    """``FEATURE_MAILING`` is off or ``MAIL_SERVER`` is not set."""


@dataclass(frozen=True)
class Mailer:
    """Sends plain-text messages; built from the config by :meth:`from_config`."""

    enabled: bool
    server: str
    port: int
    use_tls: bool
    use_auth: bool
    username: str
    password: str
    sender: str

    @classmethod
    def from_config(cls, config: PortsideConfig) -> Mailer:
        """The mailer that ``config`` describes."""
        return cls(enabled=config.FEATURE_MAILING and bool(config.MAIL_SERVER),
                   server=config.MAIL_SERVER, port=config.MAIL_PORT,
                   use_tls=config.MAIL_USE_TLS,
                   use_auth=config.MAIL_USE_AUTH or bool(config.MAIL_USERNAME),
                   username=config.MAIL_USERNAME, password=config.MAIL_PASSWORD,
                   sender=config.MAIL_DEFAULT_SENDER)

    def send(self, to: str, subject: str, body: str) -> None:
        """Send one message; raises :class:`MailingDisabled` or an SMTP/OS error."""
        if not self.enabled:
            raise MailingDisabled("mailing is disabled (FEATURE_MAILING, MAIL_SERVER)")
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        with smtplib.SMTP(self.server, self.port, timeout=SMTP_TIMEOUT_S) as smtp:
            if self.use_tls:
                smtp.starttls()
            if self.use_auth:
                smtp.login(self.username, self.password)
            smtp.send_message(message)
