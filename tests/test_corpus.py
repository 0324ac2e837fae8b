"""WikiText-2: found locally, or downloaded from a server on 127.0.0.1 with the checksum checked."""

import hashlib
import http.server
import io
import threading
import zipfile

import pytest

from jaxbert.data import corpus
from jaxbert.errors import JaxbertError

TRAIN = " = Title = \n the cat sat . the dog ran . \n"


def archive(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


GOOD = archive({f"wikitext-2/{n}": TRAIN for n in corpus.WIKITEXT2_FILES})


@pytest.fixture(scope="module")
def server():
    """Serves /good.zip, /corrupt.zip (truncated) and 404 for anything else, on 127.0.0.1 only."""
    routes = {"/good.zip": GOOD, "/corrupt.zip": GOOD[:-50]}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_verifies_and_unpacks_once(server, tmp_path, monkeypatch):
    sha1 = hashlib.sha1(GOOD).hexdigest()
    folder = corpus.locate_wikitext2(url=f"{server}/good.zip", sha1=sha1)  # JAXBERT_CACHE is tmp (conftest)
    assert (folder / "wiki.valid.tokens").read_text() == TRAIN
    assert [p.name for p in folder.parent.iterdir()] == ["wikitext-2"]  # no temporary files left
    # Found in the cache the second time: a URL that would fail is never asked.
    assert corpus.locate_wikitext2(url=f"{server}/missing.zip", sha1=sha1) == folder


def test_corrupt_download_is_refused_and_leaves_nothing(server, tmp_path):
    with pytest.raises(JaxbertError, match="SHA-1 .* expected"):
        corpus.download_wikitext2(tmp_path / "c", url=f"{server}/corrupt.zip", sha1=hashlib.sha1(GOOD).hexdigest())
    assert list((tmp_path / "c").iterdir()) == []


def test_http_error_is_one_clear_message(server, tmp_path):
    with pytest.raises(JaxbertError, match="cannot download WikiText-2 .*404.*pass --data DIR"):
        corpus.download_wikitext2(tmp_path / "c", url=f"{server}/nope.zip")
    assert list((tmp_path / "c").iterdir()) == []


def test_real_archive_checksum_is_the_d2l_one():
    assert corpus.WIKITEXT2_SHA1 == "3c914d17d80b1459be871a5039ac23e752a53cbe"


def test_local_folder_or_its_parent(wikitext_dir, tmp_path, monkeypatch):
    assert corpus.locate_wikitext2(wikitext_dir) == wikitext_dir
    assert corpus.locate_wikitext2(wikitext_dir.parent) == wikitext_dir
    monkeypatch.setenv("JAXBERT_DATA", str(wikitext_dir))
    assert corpus.locate_wikitext2() == wikitext_dir
    with pytest.raises(JaxbertError, match="no wiki.train.tokens in"):
        corpus.locate_wikitext2(tmp_path)


def test_read_wiki_keeps_paragraphs_of_two_sentences(tmp_path):
    f = tmp_path / "wiki.train.tokens"
    # As the book: the ' . ' test runs on the raw line, so a line ending in " . " passes it with one sentence.
    f.write_text(" = Heading = \n Only one . \n One . Not two\n First one . Second One . Third \n\n")
    assert corpus.read_wiki_paragraphs(f) == [["only one ."], ["one", "not two"], ["first one", "second one", "third"]]
    # Its errors are tested with the compiled reader's, in test_wikitext.py.


def test_wordpiece_corpora_read_wikitext_without_its_markers(tmp_path):
    """`@-@`, `@,@` and `@.@` join what they stood between, `<unk>` is left out (about 8% of WordPiece pieces
    otherwise); the book's word-level paragraphs keep both, as the book does."""
    path = tmp_path / "wiki.train.tokens"
    path.write_text(" = Title = \n"
                    " it cost 1 @,@ 000 dollars in the well @-@ known <unk> . it was 3 @.@ 5 m long . \n"
                    " <unk> \n")
    assert list(corpus.iter_documents(path)) == [["it cost 1,000 dollars in the well-known .", "it was 3.5 m long ."]]
    assert corpus.read_wiki_paragraphs(path) == [["it cost 1 @,@ 000 dollars in the well @-@ known <unk>",
                                                  "it was 3 @.@ 5 m long ."]]
