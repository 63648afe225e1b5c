"""Storage plumbing under the course's ideas: checkpoints and model folders on disk, finding
pretrained weights, loading a CLIP by name, downloads, the model pack that carries the tiny
models to a fresh machine, and the image index's database."""
