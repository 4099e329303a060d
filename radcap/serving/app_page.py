"""The page of `radcap app`: captions for uploaded images, and how far to trust them.

`radcap.serving.app` does the work; this script only lays it out. `radcap
app --run DIR` serves it with `streamlit run`, which executes it as
`__main__` for every visit and interaction; importing it does nothing. The
run folder comes from the environment (`radcap.serving.app.RUN_ENV`,
`ROOT_ENV`).

The captioner is loaded once per server process (`st.cache_resource`); each
browser session keeps its own results in its `st.session_state`. A second
tab searches the run's dataset with a retrieval run
(`radcap.serving.app_search`).
"""

from __future__ import annotations

import os
import re

import streamlit as st

from radcap.features.backbone import WeightsError
from radcap.models.card import DISCLAIMER
from radcap.models.runs import RunError
from radcap.serving import app, app_search

_MARKDOWN = re.compile(r"([\\`*_{}\[\]<>#|~$])")


@st.cache_resource(show_spinner="Loading the run's captioner...")
def service(run_dir: str, root: str | None) -> app.Service:
    """The run's `radcap.serving.app.Service`, loaded once per process."""
    return app.Service.load(run_dir, root)


@st.cache_resource(show_spinner="Loading the retrieval run...")
def search_box(run_dir: str) -> app_search.SearchBox:
    """The retrieval run's `radcap.serving.app_search.SearchBox`, once per process."""
    return app_search.SearchBox.load(run_dir)


def _search(service: app.Service) -> None:
    """The search tab: a text, then the dataset's images most like it."""
    try:
        found = app_search.find_retrieval(
            service.run_dir, os.environ.get(app_search.RETRIEVAL_ENV)
        )
        box = search_box(str(found)) if found else None
    except (RunError, ValueError, OSError) as err:
        st.error(f"Cannot load the retrieval run: {err}")
        return
    if box is None:
        st.info(app_search.absent_message(service.run_dir))
        return
    st.caption(f"Retrieval run {_text(box.run_dir.name)}: its dataset's images.")
    text = st.text_input("Describe the images to find", key="query")
    hits, note = box.search(text)
    if note:
        st.info(_text(note))
    if not hits:
        return
    with st.container(key="search-results"):
        for i, (column, hit) in enumerate(zip(st.columns(len(hits)), hits)):
            with column, st.container(key=f"hit-{i}"):
                image = app.display_image(hit["path"], side=256)
                if image is not None:
                    st.image(image, width="stretch")
                st.caption(f"{_text(hit['caption'])} (cosine {hit['score']:.2f})")


def _description(service: app.Service) -> str:
    """One line on the run: its name, decoder and dataset."""
    config = service.captioner.config
    decoder = {"merge": "merge LSTM", "transformer": "transformer"}[config.decoder]
    if config.decoder == "merge" and config.attention:
        decoder += " with attention"
    return (
        f"Run {service.run_dir.name}: {decoder} decoder, trained on {config.dataset}."
    )


def _text(text: str) -> str:
    """`text` as Markdown that shows it as it is."""
    return _MARKDOWN.sub(r"\\\1", text)


def _evidence(items: list[dict]) -> None:
    """The most similar training images, with their captions."""
    st.markdown("**The most similar training images** (cosine of `fc2` features)")
    missing = []
    for column, item in zip(st.columns(len(items)), items):
        with column:
            image = app.display_image(item["path"], side=256)
            if image is None:
                missing.append(item["image_id"])
            else:
                st.image(image, width="stretch")
            st.caption(f"{_text(item['caption'])} (cosine {item['similarity']:.2f})")
    if missing:
        st.info(f"Not on disk: the image files of {', '.join(missing)}.")


def _show(service: app.Service, result: dict, data: bytes, index: int) -> None:
    """One upload: its caption, warning, evidence and attention, or its error."""
    st.divider()
    st.subheader(_text(result["name"]))
    if result["error"]:
        st.error(_text(result["error"]))
        return
    left, right = st.columns([1, 2])
    if result["image"] is not None:
        left.image(result["image"], width="stretch")
    with right:
        with st.container(key=f"caption-{index}"):
            st.markdown(_text(result["caption"]))
        if result["frame"]:
            st.caption(f"{result['frame']} of the DICOM file")
        if result["note"]:
            st.warning(result["note"])
        if result["familiarity"] is not None:
            threshold = service.captioner.familiarity.threshold
            st.caption(
                f"familiarity {result['familiarity']:.2f} (familiar up to "
                f"{threshold:.2f}; lower is more alike)"
            )
        if result["evidence"]:
            with st.container(key=f"evidence-{index}"):
                _evidence(result["evidence"])
    if result["attention"] is not None:
        label = "Show where the model looked, word by word"
        if st.toggle(label, key=f"attention-{index}"):
            st.image(app.attention_png(service, result, data))


def _load() -> app.Service:
    """The run named by the environment, or stop with a message saying why not."""
    run_dir = os.environ.get(app.RUN_ENV)
    if not run_dir:
        st.error("No run folder given: start this page with `radcap app --run DIR`.")
        st.stop()
    try:
        return service(run_dir, os.environ.get(app.ROOT_ENV))
    except (RunError, WeightsError, ValueError, OSError) as err:
        st.error(f"Cannot load the run: {err}")
        st.stop()


def main() -> None:
    """Lay out the page for one visit or interaction."""
    st.set_page_config(page_title="radcap", layout="wide")
    st.title("radcap: captions for your images")
    service = _load()
    st.caption(_text(_description(service)))
    st.warning(DISCLAIMER)
    if service.captioner.familiarity_hint:
        st.info(service.captioner.familiarity_hint)
    if service.evidence_problem:
        st.info(service.evidence_problem)
    captions, search = st.tabs(["Caption images", "Search the dataset"])
    with search:
        _search(service)
    with captions:
        _captions(service)


def _captions(service: app.Service) -> None:
    """The caption tab: uploads in, a caption and its evidence for each."""
    files = st.file_uploader(
        "Images to caption",
        type=list(app.IMAGE_TYPES),
        accept_multiple_files=True,
        help=app.LIMITS,
    )
    search = st.radio(
        "Search",
        ["greedy", f"beam search, width {service.beam}"],
        horizontal=True,
        help="Beam search keeps the best few captions at every word; greedy "
        "takes the likeliest word each time.",
    )
    if not files:
        st.write(f"Upload one or several images: {app.LIMITS}")
        return
    memo = st.session_state.setdefault("results", {})
    uploads = [f.getvalue() for f in files]
    limit = st.get_option("server.maxUploadSize") * 2**20
    with st.spinner("Captioning..."):
        results = app.caption_uploads(
            service,
            [(f.name, data) for f, data in zip(files, uploads)],
            beam=1 if search == "greedy" else service.beam,
            memo=memo,
            max_bytes=limit,
        )
    st.download_button(
        "Download the captions (CSV)",
        app.results_csv(results),
        file_name="captions.csv",
        mime="text/csv",
    )
    for index, (result, data) in enumerate(zip(results, uploads)):
        _show(service, result, data, index)


if __name__ == "__main__":
    main()
