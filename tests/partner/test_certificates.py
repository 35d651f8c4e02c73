"""Certificates the partner generates or is given (`partner.certificates`)."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.x509.oid import NameOID

from partner.certificates import ensure_certificates, write_certificates


def test_it_serves_a_certificate_it_is_given(start_receiver, tmp_path):
    given = ensure_certificates(tmp_path / "given")
    receiver = start_receiver("--cert", str(given.cert_file), "--cert-key", str(given.key_file))
    receiver.ca_file = given.ca_file

    assert receiver.post().status_code == 200


def test_it_reuses_certificates_still_valid_so_a_trusting_sender_keeps_working(tmp_path):
    first = ensure_certificates(tmp_path)
    ca = first.ca_file.read_bytes()

    second = ensure_certificates(tmp_path)

    assert second.ca_file.read_bytes() == ca
    assert oct(second.key_file.stat().st_mode & 0o777) == "0o600"


def test_it_writes_a_certificate_naming_each_host_it_is_made_for(tmp_path):
    files = write_certificates(tmp_path, hosts=("partner.test", "127.0.0.1"))

    cert = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["partner.test"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "partner.test"


def test_it_replaces_certificates_that_are_missing_a_file(tmp_path):
    first = ensure_certificates(tmp_path)
    ca = first.ca_file.read_bytes()
    first.key_file.unlink()

    second = ensure_certificates(tmp_path)

    assert second.key_file.is_file()
    assert second.ca_file.read_bytes() != ca
