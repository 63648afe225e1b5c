"""ipywidgets front ends. They only collect input and show output; the logic lives in the
modules (`mmlib.zeroshot`, ...), so every widget can be tested by setting values and clicking.

They work with ipywidgets 7 (what Colab has: 7.7.1) and 8 (JupyterLab 4). On Colab with
ipywidgets 8, Colab renders them only through its custom widget manager, which the widgets
switch on themselves (`colab_widget_manager`).
"""

from __future__ import annotations

import io

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display
from PIL import Image

from mmlib.env import in_colab
from mmlib.images import to_rgb
from mmlib.plots import probability_bars
from mmlib.zeroshot import classify_labels


def ipywidgets_major() -> int:
    """Return the major version of the installed ipywidgets (7 or 8)."""
    return int(W.__version__.split(".")[0])


def colab_widget_manager() -> bool:
    """On Colab with ipywidgets 8, switch on Colab's custom widget manager (which is the only way
    Colab shows ipywidgets 8); return True when it did. With ipywidgets 7 (Colab's own) nothing
    is needed: Colab's built-in manager renders them, and switching would break some widgets."""
    if ipywidgets_major() < 8 or not in_colab():
        return False
    from google.colab import output  # only exists on Colab

    output.enable_custom_widget_manager()
    return True


def uploaded_files(upload: W.FileUpload) -> list[tuple[str, bytes]]:
    """Return [(file name, content)] of a FileUpload's value in either ipywidgets' shape: 7 gives
    {name: {"metadata": ..., "content": bytes}}, 8 a tuple of {"name", "content", ...}."""
    value = upload.value
    if isinstance(value, dict):
        items = [(name, item.get("content", b"")) for name, item in value.items()]
    else:
        items = [(item["name"], item["content"]) for item in value]
    return [(name, bytes(content)) for name, content in items]


def _show(widget: W.Widget) -> None:
    colab_widget_manager()
    display(widget)


class ZeroShotWidget:
    """Pick or upload an image, type comma-separated labels, see a bar chart of probabilities."""

    def __init__(
        self,
        model,
        preprocess,
        tokenizer,
        images: dict[str, Image.Image],
        labels: str = "a cat, a dog, a rocket",
    ):
        if not images:
            raise ValueError("images is empty: give at least one {name: PIL image} to pick from")
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self.images = dict(images)
        self.picker = W.Dropdown(options=list(self.images), description="image")
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload")
        self.labels = W.Text(value=labels, description="labels", layout=W.Layout(width="60%"))
        self.button = W.Button(description="Classify", button_style="primary")
        self.output = W.Output()
        self.result: list[tuple[str, float]] | None = None
        self.error: str | None = None
        self.button.on_click(lambda _: self.classify())
        self.upload.observe(self._on_upload, names="value")

    def _on_upload(self, change) -> None:
        files = uploaded_files(self.upload)
        if not files:
            return
        name, content = files[-1]
        try:
            with Image.open(io.BytesIO(content)) as img:
                img.load()
                self.images[name] = to_rgb(img)
        except Exception as err:  # a bad upload must never kill the widget
            self._show_error(f"{name!r} is not an image Pillow can read ({err})")
            return
        self.picker.options = list(self.images)
        self.picker.value = name

    def _show_error(self, message: str) -> None:
        self.error, self.result = message, None
        self.output.clear_output()
        with self.output:
            print(message)

    def classify(self) -> list[tuple[str, float]] | None:
        """Classify the picked image against the typed labels; show and return the result."""
        image = self.images[self.picker.value]
        try:
            result = classify_labels(
                self.model, self.preprocess, self.tokenizer, image, self.labels.value
            )
        except ValueError as err:
            self._show_error(str(err))
            return None
        self.error, self.result = None, result
        self.output.clear_output(wait=True)
        with self.output:
            fig = probability_bars(
                [r[0] for r in result],
                [r[1] for r in result],
                title=f"Zero-shot: {self.picker.value}",
                image=image,
            )
            display(fig)
            plt.close(fig)
        return result

    def widget(self) -> W.Widget:
        """Return the widget to display."""
        return W.VBox(
            [W.HBox([self.picker, self.upload]), W.HBox([self.labels, self.button]), self.output]
        )

    def _ipython_display_(self) -> None:
        _show(self.widget())


class SearchWidget:
    """A text box and a gallery of the best-matching images with their scores."""

    def __init__(self, index, k: int = 8, thumb: int = 96):
        self.index, self.thumb = index, thumb
        self.query = W.Text(
            placeholder="a purple star",
            description="search",
            layout=W.Layout(width="60%"),
            continuous_update=False,
        )
        self.k = W.IntSlider(value=k, min=1, max=32, description="results")
        self.button = W.Button(description="Search", button_style="primary")
        self.gallery = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.message = W.HTML()
        self.hits = []
        self.button.on_click(lambda _: self.search())
        self.query.observe(lambda _: self.search(), names="value")  # Enter in the box searches

    def search(self):
        """Run the query in the text box; fill the gallery and return the hits."""
        try:
            self.hits = self.index.search(self.query.value, k=self.k.value)
        except ValueError as err:
            self.hits, self.gallery.children = [], ()
            self.message.value = f"<b>{err}</b>"
            return []
        cards = []
        for h in self.hits:
            buf = io.BytesIO()
            load_thumb = Image.open(h.path).convert("RGB").resize((self.thumb, self.thumb))
            load_thumb.save(buf, format="PNG")
            cards.append(
                W.VBox(
                    [
                        W.Image(value=buf.getvalue(), format="png"),
                        W.Label(f"#{h.rank + 1}  {h.score:.3f}"),
                    ]
                )
            )
        self.gallery.children = tuple(cards)
        self.message.value = f"{len(self.hits)} results for <i>{self.query.value}</i>"
        return self.hits

    def widget(self) -> W.Widget:
        """Return the widget to display."""
        return W.VBox([W.HBox([self.query, self.k, self.button]), self.message, self.gallery])

    def _ipython_display_(self) -> None:
        _show(self.widget())


class GenerateWidget:
    """A prompt box, steps and seed, a live preview and a Stop button that really stops.

    The optimisation runs in a background thread, so the kernel stays free to handle the Stop
    click; the thread checks a flag at every step.
    """

    def __init__(self, vqgan, clips, config=None, preview_every: int = 5, scale: int = 6):
        import threading

        from mmlib.generate import GenerateConfig

        self.vqgan, self.clips = vqgan, clips
        self.config = config or GenerateConfig()
        self.preview_every, self.scale = preview_every, scale
        self.prompt = W.Text(value="a red star", description="prompt", layout=W.Layout(width="50%"))
        self.steps = W.IntText(value=self.config.steps, description="steps")
        self.seed = W.IntText(value=self.config.seed, description="seed")
        self.start = W.Button(description="Generate", button_style="primary")
        self.stop = W.Button(description="Stop", button_style="warning", disabled=True)
        self.preview = W.Image(format="png")
        self.status = W.HTML()
        self.result = None
        self.thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.start.on_click(lambda _: self.run())
        self.stop.on_click(lambda _: self._stop.set())

    def _show(self, images) -> None:
        arr = (images[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype("uint8")
        img = Image.fromarray(arr).resize(
            (arr.shape[1] * self.scale, arr.shape[0] * self.scale), Image.Resampling.NEAREST
        )
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        self.preview.value = buf.getvalue()

    def _callback(self, step, images, loss):
        if step % self.preview_every == 0:
            self._show(images)
            self.status.value = f"step {step}/{self.steps.value}, loss {loss:.3f}"
        return self._stop.is_set()

    def _work(self, config) -> None:
        from mmlib.generate import generate

        try:
            self.result = generate(
                [self.prompt.value],
                self.vqgan,
                self.clips,
                config,
                progress=False,
                callback=self._callback,
            )
            self._show(self.result.images)
            self.status.value = self.result.stopped or "done"
        except ValueError as err:  # bad prompt: say so, keep the widget alive
            self.status.value = f"<b>{err}</b>"
        finally:
            self.start.disabled, self.stop.disabled = False, True

    def run(self):
        """Start generating in a background thread (the Generate button); return the thread."""
        import dataclasses
        import threading

        from mmlib.prompts import parse_prompt

        try:
            parse_prompt(self.prompt.value)
        except ValueError as err:
            self.status.value = f"<b>{err}</b>"
            return None
        config = dataclasses.replace(self.config, steps=self.steps.value, seed=self.seed.value)
        self._stop.clear()
        self.start.disabled, self.stop.disabled = True, False
        self.thread = threading.Thread(target=self._work, args=(config,), daemon=True)
        self.thread.start()
        return self.thread

    def widget(self) -> W.Widget:
        """Return the widget to display."""
        return W.VBox(
            [
                W.HBox([self.prompt, self.start, self.stop]),
                W.HBox([self.steps, self.seed]),
                self.preview,
                self.status,
            ]
        )

    def _ipython_display_(self) -> None:
        _show(self.widget())
