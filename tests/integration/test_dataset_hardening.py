"""Uploads that try to break the API: deep nesting, cut-off bodies, workbooks that
inflate, slow senders, too many uploads at once, files left behind by a crash.

Each answer is a clear 4xx problem and nothing is stored half-way.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import time
import zipfile

import openpyxl
import pytest

from tests.conftest import API_KEYS, auth, running_api
from tests.integration.test_datasets_api import stored_files, upload
from tests.seeds import chat_examples, jsonl

BOUNDARY = "hardening-boundary"


def multipart(content: bytes, *, filename: str = "data.jsonl", closed: bool = True) -> bytes:
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode() if closed else b""
    return head + content + tail


MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def nested_line(depth: int) -> bytes:
    return b'{"messages": ' + b"[" * depth + b"]" * depth + b"}\n"


def workbook_bytes(rows: list[list[object]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
_DOC = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml"


def shared_strings_workbook(count: int) -> bytes:
    """A genuine workbook whose shared-strings table holds `count` distinct strings."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "[Content_Types].xml",
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" '
            'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{_TYPE}.sheet.main+xml"/>'
            f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{_TYPE}.worksheet+xml"/>'
            f'<Override PartName="/xl/sharedStrings.xml" ContentType="{_TYPE}.sharedStrings+xml"/>'
            "</Types>",
        )
        archive.writestr(
            "_rels/.rels",
            f'<Relationships xmlns="{_RELS}"><Relationship Id="rId1" '
            f'Type="{_DOC}/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        )
        archive.writestr(
            "xl/workbook.xml",
            f'<workbook xmlns="{_MAIN}" xmlns:r="{_DOC}"><sheets>'
            '<sheet name="qa" sheetId="1" r:id="rId1"/></sheets></workbook>',
        )
        archive.writestr(
            "xl/_rels/workbook.xml.rels",
            f'<Relationships xmlns="{_RELS}">'
            f'<Relationship Id="rId1" Type="{_DOC}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{_DOC}/sharedStrings" Target="sharedStrings.xml"/>'
            "</Relationships>",
        )
        with archive.open("xl/sharedStrings.xml", "w") as handle:
            handle.write(f'<sst xmlns="{_MAIN}">'.encode())
            for n in range(count):
                handle.write(f"<si><t>string {n} {n * 7919}</t></si>".encode())
            handle.write(b"</sst>")
        archive.writestr(
            "xl/worksheets/sheet1.xml",
            f'<worksheet xmlns="{_MAIN}"><sheetData><row r="1">'
            '<c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c>'
            "</row></sheetData></worksheet>",
        )
    return out.getvalue()


def zip_bomb(member: str, inflated_bytes: int) -> bytes:
    """A ZIP that looks like a workbook and declares `inflated_bytes` of zeros."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        with archive.open(member, "w", force_zip64=True) as handle:
            block = b"\0" * (1024 * 1024)
            for _ in range(inflated_bytes // len(block)):
                handle.write(block)
    return out.getvalue()


async def test_a_line_nested_100000_deep_is_a_422_naming_its_line(client, data_dir) -> None:
    before = stored_files(data_dir)
    content = jsonl(chat_examples(10)) + nested_line(100_000)
    response = await client.post("/datasets", headers=auth(), **upload("deep.jsonl", content))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert [(e["line"], e["code"]) for e in problem["errors"]] == [(11, "too_deeply_nested")]
    assert "Line 11" in problem["errors"][0]["message"]
    # The deep line did not parse, so it is not counted as an example.
    assert problem["example_count"] == 10
    assert stored_files(data_dir) == before


async def test_a_role_or_part_type_that_is_a_list_or_object_is_a_422_naming_it(
    client, data_dir
) -> None:
    # Such values cannot be looked up in a set of names: they once raised
    # inside the validator and the upload got a 500.
    before = stored_files(data_dir)
    odd = [
        {"messages": [{"role": ["user"], "content": "q"}, {"role": "assistant", "content": "a"}]},
        {
            "messages": [
                {"role": "user", "content": [{"type": {"kind": "text"}, "text": "q"}]},
                {"role": "assistant", "content": "a"},
            ]
        },
    ]
    content = jsonl(chat_examples(10) + odd)
    response = await client.post("/datasets", headers=auth(), **upload("odd.jsonl", content))
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [(e["line"], e["path"], e["code"]) for e in errors] == [
        (11, "messages[0].role", "unrecognized_role"),
        (12, "messages[0].content[0]", "invalid_content"),
    ]
    assert stored_files(data_dir) == before


async def test_a_deep_element_of_a_json_array_is_a_422_too(client) -> None:
    content = b"[" + b",".join(jsonl(chat_examples(10)).splitlines()) + b"," + b"[" * 50_000
    content += b"]" * 50_000 + b"]"
    response = await client.post("/datasets", headers=auth(), **upload("deep.json", content))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["code"] == "too_deeply_nested"
    assert response.json()["errors"][0]["line"] == 11


async def test_an_empty_file_is_refused_as_empty(client) -> None:
    response = await client.post("/datasets", headers=auth(), **upload("empty.jsonl", b""))
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [e["code"] for e in errors] == ["empty_file"]
    assert "empty" in errors[0]["message"]
    blank = await client.post("/datasets", headers=auth(), **upload("blank.jsonl", b"\n \n\n"))
    assert [e["code"] for e in blank.json()["errors"]] == ["empty_file"]


async def test_a_cut_off_multipart_body_is_refused_and_nothing_is_stored(client, data_dir) -> None:
    before = stored_files(data_dir)
    full = jsonl(chat_examples(30))
    # The closing boundary never arrives: the file may be missing its end.
    cut = multipart(full[: len(full) // 2], closed=False)
    response = await client.post("/datasets", headers={**auth(), **MULTIPART}, content=cut)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "incomplete_upload"
    assert (await client.get("/datasets", headers=auth())).json()["data"] == []
    assert stored_files(data_dir) == before
    # The same body with its boundary is fine.
    whole = await client.post("/datasets", headers={**auth(), **MULTIPART}, content=multipart(full))
    assert whole.status_code == 201, whole.text
    assert whole.json()["example_count"] == 30


async def test_a_real_workbook_is_accepted(client) -> None:
    rows: list[list[object]] = [["user", "assistant"]]
    rows += [[f"What is {n} squared?", n * n] for n in range(12)]
    response = await client.post(
        "/datasets",
        headers=auth(),
        **upload("qa.xlsx", workbook_bytes(rows), system_prompt="Math tutor"),
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["format"] == "xlsx"
    assert dataset["example_count"] == 12
    content = await client.get(f"/datasets/{dataset['id']}/content", headers=auth())
    assert '"content":"9"' in content.text.splitlines()[3]


async def test_a_broken_workbook_says_what_is_wrong_without_internal_names(
    client, data_dir
) -> None:
    response = await client.post(
        "/datasets", headers=auth(), **upload("broken.xlsx", b"PK\x03\x04 this is no workbook")
    )
    assert response.status_code == 422
    message = response.json()["errors"][0]["message"]
    assert "workbook" in message
    assert ".upload" not in message
    assert str(data_dir) not in message


@pytest.mark.parametrize(
    ("member", "inflated_mib", "expected"),
    [
        ("xl/sharedStrings.xml", 300, "inflates to 300 MiB"),  # past the total budget
        ("xl/worksheets/sheet1.xml", 40, "decompression bomb"),  # a ratio near 1000:1
    ],
)
async def test_a_workbook_that_inflates_too_far_is_refused_before_parsing(
    client, data_dir, member, inflated_mib, expected
) -> None:
    bomb = zip_bomb(member, inflated_mib * 1024 * 1024)
    assert len(bomb) < 1024 * 1024
    before = stored_files(data_dir)
    response = await client.post("/datasets", headers=auth(), **upload("bomb.xlsx", bomb))
    assert response.status_code == 422, response.text
    assert expected in response.json()["errors"][0]["message"]
    assert stored_files(data_dir) == before


async def test_a_workbook_needing_more_memory_than_allowed_is_refused(
    env, monkeypatch, data_dir
) -> None:
    """Parsing runs in a child capped at XLSX_MEMORY_LIMIT_BYTES: 1.2 M shared strings
    (60 MB of XML, compressed 6:1) need more than 128 MiB, so the API refuses the
    workbook instead of growing by hundreds of megabytes."""
    from service.settings import load_settings

    for name, value in {**env, "XLSX_MEMORY_LIMIT_BYTES": str(128 * 1024 * 1024)}.items():
        monkeypatch.setenv(name, value)
    book = shared_strings_workbook(1_200_000)
    import httpx

    with running_api(load_settings()) as (base_url, _):
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            response = await http.post("/datasets", headers=auth(), **upload("huge.xlsx", book))
    assert response.status_code == 422, response.text
    message = response.json()["errors"][0]["message"]
    assert "needs more than 128 MiB" in message


def _raw_upload(port: int, *, declared: int, key: str) -> socket.socket:
    """Open a connection and send only the headers and the start of a multipart body."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        f"POST /datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    sock.sendall(head + multipart(b"", closed=False))
    return sock


def _read_status(sock: socket.socket, timeout: float = 20) -> int:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


class TestSlowSenders:
    @pytest.fixture
    def env(self, env: dict[str, str]) -> dict[str, str]:
        return {
            **env,
            "UPLOAD_IDLE_TIMEOUT_SECONDS": "1",
            "UPLOAD_MIN_BYTES_PER_SECOND": "200000",
            "UPLOAD_RATE_GRACE_SECONDS": "1",
            "UPLOAD_CONCURRENCY_PER_TENANT": "1",
        }

    async def test_a_stalled_body_gets_408_and_nothing_is_stored(self, client, data_dir) -> None:
        port = int(str(client.base_url).rsplit(":", 1)[1])
        before = stored_files(data_dir)
        sock = await asyncio.to_thread(
            _raw_upload, port, declared=10_000_000, key=API_KEYS["tenant-a"]
        )
        try:
            status = await asyncio.to_thread(_read_status, sock)
        finally:
            sock.close()
        assert status == 408
        assert stored_files(data_dir) == before

    async def test_a_trickling_body_below_the_minimum_rate_gets_408(self, client) -> None:
        port = int(str(client.base_url).rsplit(":", 1)[1])

        def trickle() -> int:
            sock = _raw_upload(port, declared=10_000_000, key=API_KEYS["tenant-a"])
            try:
                sock.settimeout(20)
                for _ in range(60):  # 100 bytes every 0.1 s: far below 200 kB/s
                    try:
                        sock.sendall(b"x" * 100)
                    except OSError:
                        break  # the server gave up on us, as it should
                    time.sleep(0.1)
                return _read_status(sock)
            finally:
                sock.close()

        assert await asyncio.to_thread(trickle) == 408

    async def test_one_tenant_may_hold_only_its_share_of_uploads(self, client) -> None:
        port = int(str(client.base_url).rsplit(":", 1)[1])
        held = await asyncio.to_thread(
            _raw_upload, port, declared=10_000_000, key=API_KEYS["tenant-a"]
        )
        try:
            await asyncio.sleep(0.3)  # the held upload has taken tenant-a's one slot
            second = await client.post(
                "/datasets", headers=auth(), **upload("ok.jsonl", jsonl(chat_examples(10)))
            )
            assert second.status_code == 429, second.text
            assert second.json()["code"] == "too_many_uploads"
            assert "retry-after" in second.headers
            other = await client.post(
                "/datasets",
                headers=auth("tenant-b"),
                **upload("ok.jsonl", jsonl(chat_examples(10))),
            )
            assert other.status_code == 201, other.text
        finally:
            held.close()
        # The slot comes back when the held upload ends (here: its connection drops).
        deadline = time.monotonic() + 10
        while True:
            again = await client.post(
                "/datasets", headers=auth(), **upload("ok.jsonl", jsonl(chat_examples(10)))
            )
            if again.status_code == 201 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert again.status_code == 201, again.text


async def test_files_a_killed_process_left_behind_are_swept_at_start_up(settings, data_dir):
    """Scratch files no request can still own and files no dataset owns go at start-up;
    a fresh scratch file (an upload in flight in another process) stays."""
    old = time.time() - 7 * 24 * 3600
    leftovers = [
        data_dir / "tmp" / "abandoned.upload",
        data_dir / "originals" / "ds_deletedlongago.upload",
        data_dir / "datasets" / "ds_orphanedfile.jsonl",
    ]
    fresh = data_dir / "tmp" / "in-flight.upload"
    for path in [*leftovers, fresh]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"{}\n")
    for path in leftovers:
        os.utime(path, (old, old))
    with running_api(settings):
        pass
    assert [p for p in leftovers if p.exists()] == []
    assert fresh.exists()
