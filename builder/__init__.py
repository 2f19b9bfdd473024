"""airlock's connected half: resolve, fetch, copy images, pack and sign a bundle."""
