"""datasets fetch/verify/list against a local HTTP server (127.0.0.1 only) started by the test."""

import hashlib
import io
import json
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.accuracy import data, fetch
from bench.core.errors import UsageError

FIXTURES = Path(__file__).parent / "fixtures" / "accuracy"


class _Server:
    """Serves ``files`` (path -> bytes) with HTTP Range support; ``cut`` paths drop the connection halfway."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.ranges: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    server.ranges.append(self.headers["Range"])
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in server.cut:
                    server.cut.discard(self.path)
                    self.wfile.write(body[start : start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def env(tmp_path, monkeypatch):
    manifests, cache = tmp_path / "manifests", tmp_path / "cache"
    manifests.mkdir()
    monkeypatch.setenv(fetch.MANIFEST_ENV, str(manifests))
    monkeypatch.setenv(fetch.DATA_ENV, str(cache))
    return manifests, cache


def _manifest(folder: Path, name: str, files: list[dict], tasks=("<OD>",)) -> None:
    lines = [
        f'name = "{name}"',
        'description = "test"',
        'license = "CC0"',
        f"tasks = {json.dumps(list(tasks))}",
        'format = "COCO JSON"',
        'subset = "sha256 order"',
    ]
    for f in files:
        lines += ["[[files]]"] + [f"{k} = {json.dumps(v)}" for k, v in f.items()]
    (folder / f"{name}.toml").write_text("\n".join(lines) + "\n")


def _zip(members: dict[str, bytes], links: dict[str, str] = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return buf.getvalue()


def _tar(members: dict[str, bytes], links: dict[str, tuple[bytes, str]] = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)
    return buf.getvalue()


def _coco_zip() -> bytes:
    root = FIXTURES / "coco-val2017"
    return _zip({str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()})


def _sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def test_fetch_good_archive_then_load_verify_and_list(server, env):
    manifests, cache = env
    body, ann = _coco_zip(), b'{"note": "plain file"}'
    server.files.update({"/coco.zip": body, "/extra.json": ann})
    _manifest(
        manifests,
        "coco-val2017",
        [
            {
                "name": "coco.zip",
                "url": f"{server.url}/coco.zip",
                "size": len(body),
                "sha256": _sha(body),
                "extract": True,
            },
            {"name": "extra.json", "url": f"{server.url}/extra.json", "size": len(ann), "sha256": ""},
        ],
    )
    assert [r.fetched for r in fetch.list_datasets()] == ["no"]
    logs = []
    folder = fetch.fetch("coco-val2017", log=logs.append)
    assert (folder / fetch.READY).is_file() and (folder / "extra.json").read_bytes() == ann
    assert any("checksum unknown in manifest" in line for line in logs)
    assert sorted(s.image_id for s in data.load_samples("coco-val2017")) == [139, 285, 632]
    report = fetch.verify("coco-val2017")
    assert report.ok and "coco.zip: sha256 ok" in report.lines
    assert any(line.startswith("extra.json: checksum unknown in manifest") for line in report.lines)
    row = fetch.list_datasets()[0]
    assert (row.name, row.fetched, row.size_bytes, row.license) == (
        "coco-val2017",
        "yes",
        len(body) + len(ann),
        "CC0",
    )
    assert "coco-val2017" in fetch.format_rows([row])
    # a changed extracted file fails verification
    (folder / "annotations" / "captions_val2017.json").write_text("{}")
    assert not fetch.verify("coco-val2017").ok
    # fetching again is a no-op
    assert fetch.fetch("coco-val2017", log=logs.append) == folder and "already fetched" in logs[-1]


def test_tar_archive_with_internal_link(server, env):
    manifests, cache = env
    body = _tar({"d/a.txt": b"hello"}, links={"d/b.txt": (tarfile.SYMTYPE, "a.txt")})
    server.files["/t.tar.gz"] = body
    _manifest(
        manifests,
        "t",
        [{"name": "t.tar.gz", "url": f"{server.url}/t.tar.gz", "sha256": _sha(body), "extract": True}],
    )
    folder = fetch.fetch("t", log=lambda _: None)
    assert (folder / "d" / "b.txt").read_bytes() == b"hello"


def test_corrupt_download_is_deleted_and_never_ready(server, env):
    manifests, cache = env
    good = _coco_zip()
    server.files["/coco.zip"] = good[:-10] + b"0123456789"
    _manifest(
        manifests,
        "c",
        [{"name": "coco.zip", "url": f"{server.url}/coco.zip", "sha256": _sha(good), "extract": True}],
    )
    with pytest.raises(UsageError, match="checksum mismatch for coco.zip"):
        fetch.fetch("c", log=lambda _: None)
    assert not fetch.is_ready("c") and not (cache / "c").exists()
    assert not list((cache / fetch.DOWNLOADS / "c").iterdir())
    assert not fetch.verify("c").ok


def test_corrupt_archive_without_checksum_is_refused(server, env):
    manifests, cache = env
    server.files["/bad.zip"] = b"PK\x03\x04 this is not a zip archive"
    _manifest(manifests, "c", [{"name": "bad.zip", "url": f"{server.url}/bad.zip", "extract": True}])
    with pytest.raises(UsageError, match="corrupt archive bad.zip"):
        fetch.fetch("c", log=lambda _: None)
    assert not fetch.is_ready("c") and not (cache / "c").exists()


@pytest.mark.parametrize(
    ("archive", "member"),
    [
        (_zip({"../evil.txt": b"x"}), "../evil.txt"),
        (_zip({"/etc/evil.txt": b"x"}), "/etc/evil.txt"),
        (_zip({"ok.txt": b"x"}, links={"link": "../../outside"}), "link"),
        (_tar({"a/../../evil.txt": b"x"}), "a/../../evil.txt"),
        (_tar({"ok.txt": b"x"}, links={"s": (tarfile.SYMTYPE, "/etc/passwd")}), "s"),
        (_tar({"ok.txt": b"x"}, links={"h": (tarfile.LNKTYPE, "../outside")}), "h"),
    ],
)
def test_malicious_archives_are_refused(server, env, archive, member):
    manifests, cache = env
    suffix = ".zip" if archive[:2] == b"PK" else ".tar.gz"
    server.files[f"/m{suffix}"] = archive
    _manifest(
        manifests,
        "m",
        [{"name": f"m{suffix}", "url": f"{server.url}/m{suffix}", "sha256": _sha(archive), "extract": True}],
    )
    with pytest.raises(UsageError, match=f"refusing archive member {member!r}"):
        fetch.fetch("m", log=lambda _: None)
    assert not fetch.is_ready("m") and not (cache / "m").exists()
    assert not (cache.parent / "evil.txt").exists() and not (cache.parent / "outside").exists()


def test_interrupted_download_resumes_with_range(server, env):
    manifests, cache = env
    body = _coco_zip()
    server.files["/coco.zip"] = body
    server.cut.add("/coco.zip")
    _manifest(
        manifests,
        "r",
        [
            {
                "name": "coco.zip",
                "url": f"{server.url}/coco.zip",
                "size": len(body),
                "sha256": _sha(body),
                "extract": True,
            }
        ],
    )
    with pytest.raises(UsageError, match="interrupted.*run fetch again to resume"):
        fetch.fetch("r", log=lambda _: None)
    part = cache / fetch.DOWNLOADS / "r" / "coco.zip.part"
    half = part.stat().st_size
    assert 0 < half < len(body) and not fetch.is_ready("r")
    fetch.fetch("r", log=lambda _: None)
    assert server.ranges == [f"bytes={half}-"]
    assert fetch.is_ready("r") and fetch.verify("r").ok


def test_offline_is_one_clear_line(env):
    manifests, cache = env
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _manifest(manifests, "o", [{"name": "o.json", "url": f"http://127.0.0.1:{port}/o.json"}])
    with pytest.raises(UsageError) as err:
        fetch.fetch("o", log=lambda _: None)
    assert "\n" not in str(err.value) and "cannot reach" in str(err.value) and "offline" in str(err.value)


def test_unknown_dataset_and_embedded(env):
    manifests, _ = env
    with pytest.raises(UsageError, match="unknown dataset manifest 'nope'"):
        fetch.fetch("nope")
    (manifests / "s.toml").write_text(
        'name = "s"\ndescription = "d"\nlicense = "MIT"\nembedded = true\n'
        'format = "generated"\nsubset = "first N"\n'
    )
    assert fetch.verify("s").ok and fetch.list_datasets()[0].fetched == "embedded"


def test_shipped_manifests_parse():
    known = fetch.manifests(Path(__file__).parents[1] / "datasets_manifest")
    assert {
        "coco-val2017",
        "coco-karpathy-test",
        "refcoco",
        "refcocoplus",
        "refcocog",
        "textcaps-val",
        "synthetic-smoke",
    } <= set(known)
    assert all(known[d].name in known for m in known.values() for d in m.requires)
