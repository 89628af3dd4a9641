"""The `optical_flow` stage: optical flow of every clip -> its action area (motion-boundary boxes) and contact sheets."""
