"""Where the action happens in a clip: optical flow, MOFO boxes, token masks and contact sheets."""
