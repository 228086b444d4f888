"""One module per pipeline stage; each reads named artifacts and writes named artifacts."""
