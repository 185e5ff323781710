"""OpenVINO on the CPU: the vision tower and projector as OpenVINO IR, the text parts in PyTorch."""
