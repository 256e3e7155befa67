"""tools/download_checkpoints.py when the connection drops: no truncated
checkpoint is left where the tools would load it, and the error says what
to do."""
import http.server
import runpy
import threading

import pytest
from helpers.tools import REPO

from dinov2_seg.checkpoints import catalog

NAME = 'dinov2_vits14_pretrain.pth'


class DroppingHandler(http.server.BaseHTTPRequestHandler):
    """Announces 100000 bytes, sends 1000 and closes the connection."""

    def do_GET(self):  # noqa: N802  (http.server's name)
        self.send_response(200)
        self.send_header('Content-Length', '100000')
        self.end_headers()
        self.wfile.write(b'\0' * 1000)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def dropping_server():
    server = http.server.HTTPServer(('127.0.0.1', 0), DroppingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.server_port}/{NAME}'
    server.shutdown()
    server.server_close()


def test_interrupted_download_leaves_no_file(dropping_server, tmp_path,
                                             monkeypatch, capsys):
    entry = catalog.OFFICIAL_FILES[NAME]
    monkeypatch.setitem(catalog.OFFICIAL_FILES, NAME,
                        entry._replace(url=dropping_server))
    tool = runpy.run_path(str(REPO / 'tools' / 'download_checkpoints.py'))
    dest = tmp_path / 'checkpoints'
    assert tool['main']([NAME, '--dest', str(dest)]) == 1
    assert list(dest.iterdir()) == []
    error = capsys.readouterr().err
    assert f'{NAME}: the download from {dropping_server} failed' in error
    assert 'nothing was written' in error and 'Run the same command again' \
        in error
