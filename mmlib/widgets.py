"""ipywidgets front ends. They only collect input and show output; the logic lives in the
modules (`mmlib.zeroshot`, ...), so every widget can be tested by setting values and clicking."""

from __future__ import annotations

import io

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display
from PIL import Image

from mmlib.images import to_rgb
from mmlib.plots import probability_bars
from mmlib.zeroshot import classify_labels


class ZeroShotWidget:
    """Pick or upload an image, type comma-separated labels, see a bar chart of probabilities."""

    def __init__(self, model, preprocess, tokenizer, images: dict[str, Image.Image],
                 labels: str = "a cat, a dog, a rocket"):  # fmt: skip
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
        files = change["new"]
        if not files:
            return
        f = files[0]
        try:
            with Image.open(io.BytesIO(bytes(f["content"]))) as img:
                img.load()
                self.images[f["name"]] = to_rgb(img)
        except Exception as err:  # a bad upload must never kill the widget
            self._show_error(f"{f['name']!r} is not an image Pillow can read ({err})")
            return
        self.picker.options = list(self.images)
        self.picker.value = f["name"]

    def _show_error(self, message: str) -> None:
        self.error, self.result = message, None
        self.output.clear_output()
        with self.output:
            print(message)

    def classify(self) -> list[tuple[str, float]] | None:
        """Classify the picked image against the typed labels; show and return the result."""
        image = self.images[self.picker.value]
        try:
            result = classify_labels(self.model, self.preprocess, self.tokenizer, image,
                                     self.labels.value)  # fmt: skip
        except ValueError as err:
            self._show_error(str(err))
            return None
        self.error, self.result = None, result
        self.output.clear_output(wait=True)
        with self.output:
            fig = probability_bars([r[0] for r in result], [r[1] for r in result],
                                   title=f"Zero-shot: {self.picker.value}", image=image)  # fmt: skip
            display(fig)
            plt.close(fig)
        return result

    def widget(self) -> W.Widget:
        """Return the widget to display."""
        return W.VBox([W.HBox([self.picker, self.upload]), W.HBox([self.labels, self.button]),
                       self.output])  # fmt: skip

    def _ipython_display_(self) -> None:
        display(self.widget())


class SearchWidget:
    """A text box and a gallery of the best-matching images with their scores."""

    def __init__(self, index, k: int = 8, thumb: int = 96):
        self.index, self.thumb = index, thumb
        self.query = W.Text(placeholder="a purple star", description="search",
                            layout=W.Layout(width="60%"), continuous_update=False)  # fmt: skip
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
            cards.append(W.VBox([W.Image(value=buf.getvalue(), format="png"),
                                 W.Label(f"#{h.rank + 1}  {h.score:.3f}")]))  # fmt: skip
        self.gallery.children = tuple(cards)
        self.message.value = f"{len(self.hits)} results for <i>{self.query.value}</i>"
        return self.hits

    def widget(self) -> W.Widget:
        """Return the widget to display."""
        return W.VBox([W.HBox([self.query, self.k, self.button]), self.message, self.gallery])

    def _ipython_display_(self) -> None:
        display(self.widget())
