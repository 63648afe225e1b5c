"""Storage plumbing under the course's ideas: checkpoints and model folders on disk, finding
pretrained weights, downloads, and the model pack that carries the tiny models to a fresh
machine."""
