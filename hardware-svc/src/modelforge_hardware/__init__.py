"""Hardware detection (NVML, psutil), profiles, recommendations and VRAM estimates."""
