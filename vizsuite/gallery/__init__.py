"""Gallery: page data (torch side: dataset examples, circuits) and site writing (torch-free).

Import submodules directly: `vizsuite.gallery.site` and `.pages` never import torch;
`.dataset`, `.receptive`, `.circuits` do.
"""
