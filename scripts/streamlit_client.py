"""A student without a browser: one Streamlit session driven over the server's own protocol.

A lecture's students render their pages on their own laptops; on a 2-core machine eight
Chromiums rendering plotly are the bottleneck of a browser load test, not the server
(docs/deploy.md). This client does what the browser does on the network and nothing it does
on screen: it loads the page (`/`, `/_stcore/health`, `/_stcore/host-config`), opens the
session's websocket (`/_stcore/stream`), asks for a script run with the protobuf `BackMsg`
the frontend sends, reads every `ForwardMsg` until the run has finished, and fetches every
`/media/...` file the run's elements point to (images, large figures), as the browser would.
Uploading a photo is the frontend's steps: choose "Upload" in the sidebar (a rerun with that
widget's value, `choose_upload`), then, timed as `upload`, ask for an upload URL
(`file_urls_request`), `PUT` the file, and rerun with the uploader's state. Widget ids are read from the elements the server sent, so
nothing about the app is hard-coded but the two widget keys (`_source`, `_upload`) and the
choice's label.

Static frontend files (`/static/...`) are not fetched: a browser caches them after its first
visit, and behind the proxy of docs/deploy.md nginx sends them without the app's processes.
Streamlit's protobufs (`streamlit.proto`) and `websockets` come with Streamlit itself.
"""
from __future__ import annotations

import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import requests
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState, ContextInfo
from streamlit.proto.Common_pb2 import FileUploaderState, UploadedFileInfo
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates
from websockets.sync.client import connect

MEDIA = re.compile(rb"/media/[0-9a-f]+\.[a-z0-9]+")
XSRF_COOKIE = "_streamlit_xsrf"
SOURCE_KEY, UPLOAD_KEY, UPLOAD_CHOICE = "_source", "_upload", "Upload"


class ProtocolError(RuntimeError):
    """The server did not answer as a Streamlit server of this app does."""


class HeadlessSession:
    """One student's session. `visit()` and `upload(name, data)` return seconds, from the
    first request to the last media file of the finished run."""

    def __init__(self, url: str, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        self.ws = None
        self.session_id = ""
        self.page_script_hash = ""
        self.query_string = ""
        self.widget_ids: dict[str, str] = {}  # user key -> the element's widget id
        self.exceptions = 0  # exception elements the runs showed
        self.media_bytes = 0

    # ------------------------------------------------------------------ the two steps

    def visit(self) -> float:
        t0 = time.perf_counter()
        self.http.get(self.url + "/", timeout=self.timeout).raise_for_status()
        for path in ("/_stcore/health", "/_stcore/host-config"):
            self.http.get(self.url + path, timeout=self.timeout)
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        cookies = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        self.ws = connect(f"{scheme}://{parts.netloc}{parts.path}/_stcore/stream",
                          subprotocols=["streamlit", self.http.cookies.get(XSRF_COOKIE, "")],
                          additional_headers={"Origin": self.url, "Cookie": cookies},
                          open_timeout=self.timeout, max_size=None)
        self._run(WidgetStates())
        return time.perf_counter() - t0

    def choose_upload(self) -> float:
        """Choose "Upload" as the image source (a rerun that shows the uploader). A student
        does this before picking a file, so it is timed apart from the upload."""
        t0 = time.perf_counter()
        self._run(WidgetStates(widgets=[self._source_upload()]))
        return time.perf_counter() - t0

    def upload(self, name: str, data: bytes) -> float:
        """Send a photo, as dropping it on the uploader does: from the request for an upload
        URL to the last media file of the run that shows the photo."""
        t0 = time.perf_counter()
        states = [self._source_upload()]
        request_id = str(uuid.uuid4())
        self._send(BackMsg(file_urls_request={"request_id": request_id, "file_names": [name],
                                              "session_id": self.session_id}))
        reply = self._receive_until(lambda m: m.WhichOneof("type") == "file_urls_response"
                                    and m.file_urls_response.response_id == request_id)
        urls = reply.file_urls_response.file_urls[0]
        token = self.http.cookies.get(XSRF_COOKIE, "")
        self.http.put(self.url + urls.upload_url, files={"file": (name, data, "image/png")},
                      headers={"X-Xsrftoken": token}, timeout=self.timeout).raise_for_status()
        info = UploadedFileInfo(name=name, size=len(data), file_id=urls.file_id, file_urls=urls)
        states.append(WidgetState(id=self._widget(UPLOAD_KEY),
                                  file_uploader_state_value=FileUploaderState(uploaded_file_info=[info])))
        # The overview names the photo it shows ("... on NAME"): the run must have used this one.
        self._run(WidgetStates(widgets=states), expect=name.encode())
        return time.perf_counter() - t0

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        self.http.close()

    # ------------------------------------------------------------------ the protocol

    def _source_upload(self) -> WidgetState:
        return WidgetState(id=self._widget(SOURCE_KEY), string_value=UPLOAD_CHOICE)

    def _widget(self, key: str) -> str:
        if key not in self.widget_ids:
            raise ProtocolError(f"the page has no widget with key {key!r}")
        return self.widget_ids[key]

    def _send(self, message: BackMsg) -> None:
        self.ws.send(message.SerializeToString())

    def _receive(self) -> tuple[ForwardMsg, bytes]:
        raw = self.ws.recv(timeout=self.timeout)
        message = ForwardMsg()
        message.ParseFromString(raw)
        return message, raw

    def _receive_until(self, done) -> ForwardMsg:
        while True:
            message, _ = self._receive()
            self._note(message)
            if done(message):
                return message

    def _run(self, widgets: WidgetStates, expect: bytes | None = None) -> None:
        """Ask for a script run with these widget values; wait until it has finished and
        every media file it refers to has been fetched. With `expect`, the run's elements
        must contain those bytes."""
        state = ClientState(query_string=self.query_string, widget_states=widgets,
                            page_script_hash=self.page_script_hash,
                            context_info=ContextInfo(timezone="UTC", timezone_offset=0, locale="en-US",
                                                     url=self.url + "/", is_embedded=False,
                                                     color_scheme="light"))
        self._send(BackMsg(rerun_script=state))
        media: set[bytes] = set()
        seen = expect is None
        while True:
            message, raw = self._receive()
            self._note(message)
            if message.WhichOneof("type") == "delta":
                media.update(MEDIA.findall(raw))
                seen = seen or expect in raw
            if message.WhichOneof("type") == "script_finished":
                status = ForwardMsg.ScriptFinishedStatus.Name(message.script_finished)
                if status == "FINISHED_SUCCESSFULLY":
                    break
                if status == "FINISHED_WITH_COMPILE_ERROR":
                    raise ProtocolError("the app's script did not compile")
                # FINISHED_EARLY_FOR_RERUN / FRAGMENT: the app reran itself; wait for that run.
        if not seen:
            raise ProtocolError(f"the run never showed {expect.decode()!r}")
        with ThreadPoolExecutor(6) as pool:  # a browser opens about six connections per host
            sizes = pool.map(lambda path: len(self.http.get(self.url + path.decode(),
                                                            timeout=self.timeout).content), media)
            self.media_bytes += sum(sizes)

    def _note(self, message: ForwardMsg) -> None:
        kind = message.WhichOneof("type")
        if kind == "new_session":
            self.session_id = message.new_session.initialize.session_id or self.session_id
            self.page_script_hash = message.new_session.page_script_hash
        elif kind == "page_info_changed":
            self.query_string = message.page_info_changed.query_string
        elif kind == "delta" and message.delta.HasField("new_element"):
            element = message.delta.new_element
            which = element.WhichOneof("type")
            if which == "exception":
                self.exceptions += 1
            widget = getattr(element, which, None) if which else None
            widget_id = getattr(widget, "id", "") if widget is not None else ""
            if isinstance(widget_id, str) and widget_id.startswith("$$ID-"):
                self.widget_ids[widget_id.rsplit("-", 1)[-1]] = widget_id
