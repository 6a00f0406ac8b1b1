"""Native code: the C predictor and body reader, generated at training, loaded when serving."""
