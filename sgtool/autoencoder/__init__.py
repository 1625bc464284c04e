"""The image -> graph -> image auto-encoder for line drawings (`sgtool train --head ae`) and its
supervised twin: model.py (encoder, DSNT, edge classifier, differentiable drawing, refinement),
losses.py, data.py (shapes images at the working resolution), train.py (its own short training
stage), evaluate.py (triplet P / R / F1 over seeds, reconstructions, graphs for `sgtool draw`).
"""
