"""Matplotlib figures drawn from analysis frames.

Figures are built with `matplotlib.figure.Figure`, never pyplot, so importing interp leaves a
notebook's backend alone; `fig.savefig` and Jupyter's inline display both work on them.
"""

from matplotlib.figure import Figure


def figure(nrows: int = 1, ncols: int = 1, *, figsize=None, **subplots):
    """(figure, axes) like `plt.subplots`, without pyplot's global state."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplots)
