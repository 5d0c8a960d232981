"""pantherseg.node.destinations: the --send-to strings and node.json entries, read strictly."""

from __future__ import annotations

import json

import pytest

from pantherseg.errors import ConfigError
from pantherseg.node.destinations import Destination, check_ae_title, load_destination, parse_destination


@pytest.mark.parametrize(
    "text, fields, described",
    [
        (
            "PACS@10.0.0.5:104",
            dict(kind="dimse", ae_title="PACS", host="10.0.0.5", port=104, outputs=None, tls=False),
            "C-STORE to PACS@10.0.0.5:104 (all outputs)",
        ),
        (
            "PACS@10.0.0.5:104?outputs=sr,seg",
            dict(kind="dimse", outputs=("seg", "sr")),
            "C-STORE to PACS@10.0.0.5:104 (seg, sr)",
        ),
        (
            "MY PACS@pacs.hospital.local:11112",
            dict(ae_title="MY PACS", host="pacs.hospital.local", port=11112),
            "C-STORE to MY PACS@pacs.hospital.local:11112 (all outputs)",
        ),
        ("ORTHANC@[::1]:4242", dict(host="::1", port=4242), "C-STORE to ORTHANC@[::1]:4242 (all outputs)"),
        (
            "TPS@10.0.0.9:2762?outputs=rtstruct&tls=yes&ca=/etc/ca.pem",
            dict(tls=True, ca_file="/etc/ca.pem", outputs=("rtstruct",)),
            "C-STORE to TPS@10.0.0.9:2762 over TLS (rtstruct)",
        ),
        (
            "https://PACS.example.org/dicom-web/",
            dict(
                kind="dicomweb",
                url="https://pacs.example.org/dicom-web",
                host="pacs.example.org",
                port=443,
                tls=True,
                ae_title=None,
            ),
            "STOW-RS to https://pacs.example.org/dicom-web (all outputs)",
        ),
        (
            "http://127.0.0.1:8042/dicom-web?outputs=seg",
            dict(url="http://127.0.0.1:8042/dicom-web", port=8042, tls=False, outputs=("seg",)),
            "STOW-RS to http://127.0.0.1:8042/dicom-web (seg)",
        ),
        (
            "http://[::1]/dicomweb",
            dict(host="::1", port=80, url="http://[::1]/dicomweb"),
            "STOW-RS to http://[::1]/dicomweb (all outputs)",
        ),
    ],
)
def test_each_form_reads_and_comes_back_unchanged(text, fields, described):
    dest = parse_destination(text)
    for name, value in fields.items():
        assert getattr(dest, name) == value, name
    assert dest.describe() == described
    assert parse_destination(dest.text()) == dest
    assert load_destination(json.loads(json.dumps(dest.to_json()))) == dest
    assert set(dest.to_json()) == {"kind", "ae_title", "host", "port", "url", "outputs", "tls", "ca_file"}


def test_outputs_decide_which_kinds_go_there():
    some = parse_destination("PACS@h:104?outputs=seg,sr")
    assert [some.accepts(kind) for kind in ("seg", "rtstruct", "sr")] == [True, False, True]
    every = parse_destination("PACS@h:104")
    assert all(every.accepts(kind) for kind in ("seg", "rtstruct", "sr"))
    with pytest.raises(ValueError, match="output kind must be one of seg, rtstruct, sr, not 'mask'"):
        every.accepts("mask")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "expected AE@HOST:PORT or a DICOMweb URL"),
        (" PACS@h:104", "without blanks or control characters"),
        ("PACS@h:104\n", "without blanks or control characters"),
        ("PACS", "expected AE@HOST:PORT"),
        ("PACS@h", "expected AE@HOST:PORT"),
        ("PACS@h:104:5", "expected AE@HOST:PORT"),
        ("A@B@h:104", "expected AE@HOST:PORT"),
        ("@h:104", "expected an AE title of 1-16 characters, found ''"),
        ("ABCDEFGHIJKLMNOPQ@h:104", "has 17 characters; at most 16"),
        ("PA\\CS@h:104", "has '\\\\'"),
        ("PÄCS@h:104", "has 'Ä'"),
        ("PACS @h:104", "starts or ends with a space"),
        ("PACS@h:0", "port must be a number 1-65535, not '0'"),
        ("PACS@h:65536", "port must be a number 1-65535, not '65536'"),
        ("PACS@h:-1", "port must be a number 1-65535, not '-1'"),
        ("PACS@h:104x", "port must be a number 1-65535, not '104x'"),
        ("PACS@:104", "no host"),
        ("PACS@bad_host:104", "host 'bad_host' is neither a DNS name nor an IP address"),
        ("PACS@-bad.example:104", "is neither a DNS name nor an IP address"),
        ("PACS@10.0.0.256:104", "host '10.0.0.256' is neither"),
        ("PACS@[::g]:104", "host '::g' is neither"),
        ("PACS@h:104?", "nothing after '?'"),
        ("PACS@h:104?outputs", "option 'outputs' is not key=value"),
        ("PACS@h:104?outputs=", "option 'outputs=' is not key=value"),
        ("PACS@h:104?outputs=seg,mask", "outputs must be some of seg, rtstruct, sr, not 'seg,mask'"),
        ("PACS@h:104?outputs=seg,,sr", "outputs must be some of seg, rtstruct, sr"),
        ("PACS@h:104?outputs=seg,seg", "outputs names a kind twice: 'seg,seg'"),
        ("PACS@h:104?outputs=seg&outputs=sr", "option 'outputs' given twice"),
        ("PACS@h:104?colour=red", "unknown option 'colour'; expected outputs, tls, ca"),
        ("PACS@h:104?tls=1", "tls must be yes or no, not '1'"),
        ("PACS@h:104?ca=/etc/ca.pem", "a CA file (/etc/ca.pem) is given but the destination does not use TLS"),
        ("ftp://h/dicom-web", "must start with https:// or http://, not ftp://"),
        ("https://user:secret@h/dicom-web", "user names and passwords do not belong in the URL"),
        ("https://h/dicom-web#top", "has no #fragment"),
        ("https://h:0/dicom-web", "port must be 1-65535, not 0"),
        ("https://h:99999/dicom-web", "not a valid URL"),
        ("https:///dicom-web", "no host"),
        ("https://h/dicom-web?tls=yes", "the tls option is for AE@HOST:PORT"),
        ("http://h/dicom-web?ca=/etc/ca.pem", "does not use TLS"),
    ],
)
def test_a_bad_destination_is_refused_in_one_line_that_names_it(text, message):
    with pytest.raises(ConfigError) as caught:
        parse_destination(text)
    line = str(caught.value)
    assert message in line and "\n" not in line
    assert line.startswith("Destination ")


@pytest.mark.parametrize(
    "value, message",
    [
        ({"kind": "dimse", "ae_title": "A", "host": "h", "port": "104"}, "port must be an integer 1-65535, not '104'"),
        ({"kind": "dimse", "ae_title": "A", "host": "h", "port": True}, "port must be an integer 1-65535, not True"),
        ({"kind": "dimse", "ae_title": "A", "host": "h"}, "port must be an integer 1-65535, not None"),
        (
            {"kind": "dimse", "ae_title": "A", "host": "h", "port": 104, "tls": "yes"},
            "tls must be true or false, not 'yes'",
        ),
        (
            {"kind": "dimse", "ae_title": "A", "host": "h", "port": 104, "outputs": "seg"},
            "'outputs' must be null or a list",
        ),
        ({"kind": "dimse", "ae_title": "A", "host": "h", "port": 104, "outputs": []}, "outputs must be some of"),
        (
            {"kind": "dimse", "ae_title": "A", "host": "h", "port": 104, "url": "http://h/x"},
            "a C-STORE destination has no url",
        ),
        ({"kind": "dimse", "ae_title": "A", "host": "h", "port": 104, "colour": 1}, "unknown key(s) 'colour'"),
        ({"kind": "dimse", "host": "h", "port": 104}, "expected an AE title of 1-16 characters, found None"),
        ({"kind": "dicomweb"}, "'url' must be an http(s):// DICOMweb URL without options, not None"),
        ({"kind": "dicomweb", "url": "https://h/x?outputs=seg"}, "without options"),
        ({"kind": "dicomweb", "url": "https://h/x", "tls": False}, "'tls' is False but the URL gives True"),
        ({"kind": "dicomweb", "url": "https://h/x", "port": 8443}, "'port' is 8443 but the URL gives 443"),
        ({"kind": "dicomweb", "url": "https://h/x", "ae_title": "PACS"}, "'ae_title' is 'PACS' but the URL gives None"),
        ({"kind": "smtp"}, "'kind' must be one of dimse, dicomweb, not 'smtp'"),
        ({}, "'kind' must be one of dimse, dicomweb, not None"),
        (["PACS@h:104"], "must be a string or an object, not list"),
        (104, "must be a string or an object, not int"),
    ],
)
def test_a_bad_json_destination_is_refused_in_one_line(value, message):
    with pytest.raises(ConfigError) as caught:
        load_destination(value)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_json_form_may_leave_out_defaults_and_what_the_url_gives():
    assert load_destination(
        {"kind": "dimse", "ae_title": "PACS", "host": "10.0.0.5", "port": 104}
    ) == parse_destination("PACS@10.0.0.5:104")
    assert load_destination(
        {"kind": "dicomweb", "url": "https://h/dicom-web", "outputs": ["sr", "seg"]}
    ) == parse_destination("https://h/dicom-web?outputs=seg,sr")
    assert load_destination("PACS@10.0.0.5:104?outputs=sr") == parse_destination("PACS@10.0.0.5:104?outputs=sr")


def test_a_destination_built_directly_is_validated_too():
    with pytest.raises(ConfigError, match="kind must be one of dimse, dicomweb, not 'dimsee'"):
        Destination(kind="dimsee", host="h", port=104, ae_title="A")
    with pytest.raises(ConfigError, match="outputs must be None or a tuple of seg, rtstruct, sr in that order"):
        Destination(kind="dimse", host="h", port=104, ae_title="A", outputs=("sr", "seg"))
    with pytest.raises(ConfigError, match="a DICOMweb destination needs an http"):
        Destination(kind="dicomweb", host="h", port=443, tls=True)


def test_slugs_are_file_names_and_tell_destinations_apart():
    texts = [
        "PACS@10.0.0.5:104",
        "PACS@10.0.0.5:105",
        "TPS@10.0.0.5:104",
        "A B@h:1",
        "https://h/dicom-web",
        "https://h/other",
        "http://h:8042/dicom-web",
        "ORTHANC@[::1]:4242",
    ]
    slugs = [parse_destination(text).slug() for text in texts]
    assert len(set(slugs)) == len(slugs)
    assert all("/" not in slug and slug not in ("", ".", "..") and not slug.startswith(".") for slug in slugs)


def test_check_ae_title_is_the_same_rule_for_other_ae_titles():
    check_ae_title("PANTHERSEG")
    with pytest.raises(ConfigError, match=r"^--ae-title: AE title 'X\\\\Y' has"):
        check_ae_title("X\\Y", "--ae-title")
