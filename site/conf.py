# Sphinx configuration of the course's website (`make site`): the executed notebooks, as the
# notebook stage of `make test` or `make course` left them in build/executed/, with README.md as
# the front page and docs/*.md. MyST-NB renders them; it never runs a notebook itself.
project = "mmlib: a hands-on course on multi-modal networks"
html_title = "mmlib course"
extensions = ["myst_nb"]
nb_execution_mode = "off"  # render the executed copies as they are
root_doc = "index"
exclude_patterns = ["README.md", "**/solutions/**"]  # README is included by index.md
html_theme = "sphinx_book_theme"
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # docs may start below a level-1 heading
