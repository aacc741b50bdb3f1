"""resattn.viz: the app's figures. Data in (numpy arrays, numbers, names), a plotly figure
out; no Streamlit, no models. Every builder shows a colour bar for every colour scale and
raw values on hover, and `figure_bytes` exports any of them as PNG or SVG.

    colour.py    scales, value ranges, colour axes, series colours, the figure style
                 (`with figure_style(PRESENTER_STYLE):` for presenter mode)
    layout.py    the plotly pieces every builder is made of (fonts, image axes, heatmaps)
    panels.py    the one panel type (a map, its colour scale, hover values): map_panel,
                 panels_figure, overlay_figure, channel_grid_figure
    network.py   the network diagram with each module's mask; the top-k predictions
    compare.py   the compare grid and how its colour axes are chosen; mean masks per class
    stats.py     histograms, mask statistics per stage, gains, concentration
    analysis.py  interventions (top-5, mask change); deletion and insertion curves
    export.py    any figure redrawn with matplotlib, as PNG or SVG bytes
"""
from .analysis import curves_figure, mask_change_figure, top5_change_figure
from .colour import (
    DEFAULT_STYLE,
    FEATURE_SCALE,
    FONT_SIZE,
    MASK_SCALE,
    MODEL_COLORS,
    PRESENTER_STYLE,
    PROJECTOR_FONT_SIZE,
    SERIES_COLORS,
    ColorAxis,
    FigureStyle,
    blend,
    blend_maps,
    current_style,
    data_axis,
    figure_style,
    series_color,
    signed_scale,
    value_range,
)
from .compare import MASK_SCALES, CompareColumn, class_means_figure, compare_axes, compare_figure
from .export import figure_bytes, to_matplotlib
from .layout import image_uri
from .network import network_figure, predictions_figure
from .panels import (
    Panel,
    before_after_panels,
    channel_grid_figure,
    map_panel,
    mosaic,
    overlay_figure,
    panels_figure,
    share_range,
)
from .stats import concentration_figure, gain_figure, histogram_figure, histograms_figure, stats_figure

__all__ = [
    "DEFAULT_STYLE", "FEATURE_SCALE", "FONT_SIZE", "MASK_SCALE", "MASK_SCALES", "MODEL_COLORS", "PRESENTER_STYLE",
    "PROJECTOR_FONT_SIZE", "SERIES_COLORS", "ColorAxis", "CompareColumn", "FigureStyle", "Panel",
    "before_after_panels", "blend", "blend_maps", "channel_grid_figure", "class_means_figure", "compare_axes",
    "compare_figure", "concentration_figure", "current_style", "curves_figure", "data_axis", "figure_bytes",
    "figure_style", "gain_figure", "histogram_figure", "histograms_figure", "image_uri", "map_panel",
    "mask_change_figure", "mosaic", "network_figure", "overlay_figure", "panels_figure", "predictions_figure",
    "series_color", "share_range", "signed_scale", "stats_figure", "to_matplotlib", "top5_change_figure",
    "value_range",
]
