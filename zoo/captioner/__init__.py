"""Image captioner: a hybrid ViT encoder and a Transformer decoder whose
cross-attention attends to the image patches (Show, Attend and Tell in
Transformer form), trained on human-written captions of the Tux Paint stamps
and Openclipart drawings.

Modules: `data` (sources, cleaning rules, image preprocessing, split),
`vocabulary`, `backbone` (the network), `decoding` (beam search with the KV
cache), `captioner` (the task model and its loader), `metrics` (CIDEr-D,
BLEU-4), `baselines`, `overlay` (attention drawings) and `cli`.

Example:

```python
import zoo

captioner = zoo.load("captioner_tuxpaint_openclipart")
captioner.caption(["/usr/share/tuxpaint/stamps/food/apple.png"])
```
"""
