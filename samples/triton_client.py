"""Moved: `python -m edgeood.deploy.client MODEL IMAGES --url 127.0.0.1:8001` (run here)."""
from edgeood.deploy.client import main
raise SystemExit(main())
