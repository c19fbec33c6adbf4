"""Photos and their sizes: blob stores, processing, serving."""
