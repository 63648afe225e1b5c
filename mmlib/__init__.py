"""mmlib: the package behind a hands-on course on multi-modal networks."""

__version__ = "0.1.0"

# Where the course lives (Colab badges and install cells) and where its model pack is published
# (a release asset of that repository, one per mmlib version): `mmlib zoo import` and the
# notebooks' first cell on Colab fetch it from here.
REPOSITORY = "mmlib-course/mmlib"
PACK_URL = (
    f"https://github.com/{REPOSITORY}/releases/download/v{__version__}/mmlib-tiny-{__version__}.zip"
)
