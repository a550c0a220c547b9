"""Random fields and terrain geometry for the synthetic scene (private helpers).

Everything here is plain vectorized numpy on a regular grid whose rows run north to south
(the GeoTIFF convention), so that "north" is ``-row`` and "east" is ``+col``.
"""

from __future__ import annotations

import numpy as np


def _radial_frequency(shape: tuple[int, int]) -> np.ndarray:
    """Radial spatial frequency (cycles per pixel) on the ``rfft2`` half-plane of ``shape``."""
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    return np.hypot(ky, kx)


def _filtered_noise(
    rng: np.random.Generator, shape: tuple[int, int], amplitude: np.ndarray
) -> np.ndarray:
    """White noise shaped by a radial amplitude spectrum, returned with zero mean, unit std."""
    half = amplitude.shape
    spectrum = rng.standard_normal(half) + 1j * rng.standard_normal(half)
    field = np.fft.irfft2(spectrum * amplitude, s=shape)
    std = field.std()
    # A constant field (e.g. a 1x1 grid) has no shape to normalise; return zeros, not NaN.
    return (field - field.mean()) / std if std > 0 else np.zeros(shape)


def fractal_field(
    rng: np.random.Generator, shape: tuple[int, int], hurst: float, smoothing: float = 0.0
) -> np.ndarray:
    """A fractional-Brownian surface by spectral synthesis.

    Amplitude falls as ``k ** -(hurst + 1)`` (power spectrum ``k ** -(2 * hurst + 2)``), the
    classic model for eroded topography: ``hurst`` near 1 gives smooth hills, near 0 rough.

    Args:
        rng: Source of randomness.
        shape: Output ``(rows, cols)``.
        hurst: Hurst exponent in ``(0, 1)``.
        smoothing: Standard deviation (pixels) of a Gaussian taper on the finest scales; a
            real 30 m DEM averages the ground over its footprint, so its slopes are not
            white noise from pixel to pixel.

    Returns:
        float64 array with zero mean and unit standard deviation.
    """
    k = _radial_frequency(shape)
    amplitude = np.zeros_like(k)
    nonzero = k > 0
    amplitude[nonzero] = k[nonzero] ** -(hurst + 1.0)
    amplitude *= np.exp(-0.5 * (2.0 * np.pi * k * smoothing) ** 2)
    return _filtered_noise(rng, shape, amplitude)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], length: float) -> np.ndarray:
    """A Gaussian random field with correlation length ``length`` (pixels).

    Args:
        rng: Source of randomness.
        shape: Output ``(rows, cols)``.
        length: Correlation length in pixels (standard deviation of the Gaussian kernel).

    Returns:
        float64 array with zero mean and unit standard deviation.
    """
    k = _radial_frequency(shape)
    amplitude = np.exp(-0.5 * (2.0 * np.pi * k * length) ** 2)
    return _filtered_noise(rng, shape, amplitude)


def slope_aspect(dem: np.ndarray, pixel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Slope and aspect of a DEM on a projected, north-up grid.

    Args:
        dem: Elevation in metres, rows north to south.
        pixel_size: Pixel edge in metres.

    Returns:
        ``(slope_deg, aspect_deg)``: slope in degrees, aspect as the compass direction the
        slope faces (downslope azimuth, clockwise from north), in ``[0, 360)``.
    """
    dz_drow, dz_dcol = np.gradient(dem, pixel_size)
    dz_dx, dz_dy = dz_dcol, -dz_drow  # rows run south, so northward is -row
    slope = np.degrees(np.arctan(np.hypot(dz_dx, dz_dy)))
    aspect = np.degrees(np.arctan2(-dz_dx, -dz_dy)) % 360.0
    return slope, aspect


def illumination(
    slope_deg: np.ndarray, aspect_deg: np.ndarray, sun_elevation: float, sun_azimuth: float
) -> np.ndarray:
    """Cosine of the local solar incidence angle on each pixel (clipped at 0 for self-shadow).

    Args:
        slope_deg: Slope in degrees.
        aspect_deg: Aspect (compass direction faced) in degrees.
        sun_elevation: Sun elevation above the horizon in degrees.
        sun_azimuth: Sun azimuth, clockwise from north, in degrees.

    Returns:
        ``cos(i)`` per pixel in ``[0, 1]``.
    """
    zenith = np.radians(90.0 - sun_elevation)
    s = np.radians(slope_deg)
    cos_i = np.cos(zenith) * np.cos(s) + np.sin(zenith) * np.sin(s) * np.cos(
        np.radians(sun_azimuth - aspect_deg)
    )
    return np.clip(cos_i, 0.0, 1.0)
