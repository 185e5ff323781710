"""OpenVINO on the CPU: Florence-2's vision tower, projector, text encoder, decoder and lm_head as OpenVINO IR,
run in their places under transformers' generate()."""
