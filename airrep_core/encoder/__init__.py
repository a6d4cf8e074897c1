"""The AirRep encoder (DESIGN.md §2): the model and its pooling scores, the ranking
loss, training (the paper's recipe and the label-efficient head training), checkpoints
and the teacher pseudo-labels of the label-efficient recipe."""
