"""Gatys et al.'s slow method, the reference baseline: python scripts/optimize.py style=starry_night content=photo.jpg

Options (see conf/optimize.yaml): solver=adam, steps=500, init=noise|color, size=1024, scales=[256,512,1024],
preserve_color=true, reconstruct=content|style layer=relu3_1, 'style.image=[a.jpg,b.jpg]' style.blend=[0.7,0.3].
"""

from impasto.commands import optimize

if __name__ == "__main__":
    optimize()
