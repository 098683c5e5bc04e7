"""Synthetic player-game interaction logs: the default demo data set.

A new user needs data that looks like a real store log (and that a two-tower
model can actually learn from) before they plug in their own. Generative story:

1. Each game has one primary genre and a Zipf-like popularity; the popularity
   ranks are shuffled across genres.
2. Each user has a sparse taste over genres (Dirichlet, small alpha, tilted
   towards popular genres), so most users focus on 1-3 genres.
3. Each user owns a heavy-tailed number of games (>= 1): log-normal by default, or a
   power law (`history_lengths="power_law"`: Pareto with `tail_exponent`, capped at half
   the catalog), where a few collectors own thousands of games. Each pick
   is either taste-driven (genre ~ taste, then game ~ popularity within genre)
   or, with probability ``NOISE_SHARE``, drawn from global popularity.
   Picks are oversampled, de-duplicated, and truncated to the user's count.
4. Play hours are log-normal and grow with affinity (the user's taste weight
   for the game's genre); low-affinity purchases are more often never played.

Sampling is two-stage and vectorised (``np.searchsorted`` over cumulative
probabilities): O(interactions) time and memory, no user x game matrix.
Ids are deliberately not contiguous so downstream code must remap them.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

GENRE_NAMES = (
    "Action",
    "Adventure",
    "RPG",
    "Strategy",
    "Simulation",
    "Puzzle",
    "Racing",
    "Sports",
    "Horror",
    "Platformer",
    "Shooter",
    "Survival",
    "Sandbox",
    "Roguelike",
    "Fighting",
    "Rhythm",
    "Visual Novel",
    "MOBA",
    "MMO",
    "Card",
)
ZIPF_EXPONENT = 1.1  # game popularity ~ 1 / rank**s
NOISE_SHARE = 0.18  # share of picks drawn from global popularity
TASTE_CONCENTRATION = 1.0  # sum of Dirichlet alphas (small => sparse tastes)
DEGREE_SIGMA = 1.0  # log-normal sigma of games per user
OVERSAMPLE = 1.5  # candidate draws per wanted game, doubled each top-up round
TOPUP_ROUNDS = 4  # sampling rounds to fill per-user deficits
STEAM_ID_BASE = 76561197960265728
HISTORY_LENGTHS = ("lognormal", "power_law")
YEAR_START = datetime(2025, 1, 1)
EPOCH_START_US = (YEAR_START - datetime(1970, 1, 1)).days * 86_400_000_000
YEAR_US = 365 * 86_400 * 1_000_000


@dataclass(frozen=True)
class SyntheticSpec:
    n_users: int = 10_000
    n_games: int = 2_000
    n_interactions: int = 150_000  # target; generated count is close to it
    n_genres: int = 20
    seed: int = 0
    history_lengths: str = "lognormal"
    """Games per user: `lognormal` (sigma 1) or `power_law` (Pareto, `tail_exponent`)."""
    tail_exponent: float = 1.2


def _validate(spec: SyntheticSpec) -> None:
    for name in ("n_users", "n_games", "n_interactions", "n_genres", "seed"):
        value = getattr(spec, name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise ValueError(f"{name} must be an int, got {value!r}")
        if value < (0 if name == "seed" else 1):
            raise ValueError(
                f"{name} must be {'non-negative' if name == 'seed' else 'positive'}, got {value}"
            )
    if spec.history_lengths not in HISTORY_LENGTHS:
        raise ValueError(
            f"history_lengths must be one of {', '.join(HISTORY_LENGTHS)}, "
            f"got {spec.history_lengths!r}"
        )
    if not spec.tail_exponent > 0:
        raise ValueError(f"tail_exponent must be > 0, got {spec.tail_exponent}")
    if spec.n_genres > spec.n_games:
        raise ValueError(f"n_genres ({spec.n_genres}) must be <= n_games ({spec.n_games})")
    if spec.n_interactions < spec.n_users:
        raise ValueError("n_interactions must be >= n_users (every user has a game)")
    if spec.n_interactions > spec.n_users * spec.n_games / 2:
        raise ValueError("n_interactions must be <= n_users * n_games / 2")


def genre_name(k: int) -> str:
    """Readable, unique genre name; cycles with a numeric suffix past 20."""
    base = GENRE_NAMES[k % len(GENRE_NAMES)]
    return base if k < len(GENRE_NAMES) else f"{base} {k // len(GENRE_NAMES) + 1}"


def _user_degrees(rng: np.random.Generator, spec: SyntheticSpec, cap: int) -> np.ndarray:
    """Game counts in [1, cap] whose mean is ~ n_interactions / n_users (bisect the scale):
    log-normal, or a power law whose top users own thousands of games."""
    if spec.history_lengths == "lognormal":
        shape = np.exp(rng.standard_normal(spec.n_users) * DEGREE_SIGMA)
    else:
        shape = (1.0 - rng.random(spec.n_users)) ** (-1.0 / spec.tail_exponent)
    mean = spec.n_interactions / spec.n_users
    lo, hi = -10.0, np.log(cap) + 10.0
    for _ in range(40):
        mu = (lo + hi) / 2
        deg = np.clip(np.floor(np.exp(mu) * shape), 1, cap)
        lo, hi = (mu, hi) if deg.mean() < mean else (lo, mu)
    return np.clip(np.floor(np.exp((lo + hi) / 2) * shape), 1, cap).astype(np.int64)


def _distinct_picks(
    sample_games: Callable[[np.ndarray], np.ndarray], degree: np.ndarray, n_games: int
) -> np.ndarray:
    """Sorted keys user * n_games + game: each user's first `degree` distinct picks.

    Oversample picks, drop duplicates and already-owned games, keep each user's first `need`
    new games in draw order; a few top-up rounds fill deficits.
    """
    n_users = len(degree)
    keys = np.empty(0, dtype=np.int64)
    need = degree.copy()
    for r in range(TOPUP_ROUNDS):
        n_draw = np.ceil(need * OVERSAMPLE * 2**r).astype(np.int64) + (need > 0) * 2
        user = np.repeat(np.arange(n_users), n_draw)
        key = user * n_games + sample_games(user)
        if len(keys):
            key = key[keys[np.minimum(np.searchsorted(keys, key), len(keys) - 1)] != key]
        key = key[np.sort(np.unique(key, return_index=True)[1])]  # first draws, user-major
        user = key // n_games
        starts_u = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
        rank = np.arange(len(key)) - np.repeat(starts_u, np.diff(np.r_[starts_u, len(key)]))
        key = key[rank < need[user]]
        need -= np.bincount(key // n_games, minlength=n_users)
        keys = np.sort(np.concatenate([keys, key]), kind="stable")
        if need.sum() <= 0.002 * len(keys):
            break
    return keys


def generate_synthetic_interactions(spec: SyntheticSpec) -> pl.DataFrame:
    """One row per distinct (user, game) pair, sorted by (user_id, game_id)."""
    _validate(spec)
    rng = np.random.default_rng(spec.seed)
    n_u, n_g, n_k = spec.n_users, spec.n_games, spec.n_genres

    # Games: a primary genre each (every genre non-empty), shuffled Zipf popularity.
    genre = rng.permutation(np.arange(n_g) % n_k)
    pop = (1.0 / np.arange(1, n_g + 1) ** ZIPF_EXPONENT)[rng.permutation(n_g)]
    order = np.argsort(genre, kind="stable")  # games grouped by genre
    cum = np.cumsum(pop[order])
    cum /= cum[-1]
    ends = np.cumsum(np.bincount(genre, minlength=n_k))
    starts = ends - np.bincount(genre, minlength=n_k)
    mass_hi = cum[ends - 1]
    mass_lo = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
    game_len = rng.normal(0.0, 0.5, n_g)  # some games are simply longer

    # Users: sparse tastes, tilted towards genres holding popular games.
    genre_mass = mass_hi - mass_lo
    alpha = TASTE_CONCENTRATION * (0.5 / n_k + 0.5 * genre_mass)
    taste = rng.dirichlet(alpha, n_u)
    taste /= taste.sum(axis=1, keepdims=True)
    # Flattened per-user cumulative tastes, offset by user index: one searchsorted.
    taste_cum = (np.cumsum(taste, axis=1) + np.arange(n_u)[:, None]).ravel()
    taste_cum[n_k - 1 :: n_k] = np.arange(1, n_u + 1)  # exact row ends
    degree = _user_degrees(rng, spec, max(1, (n_g + 1) // 2))

    def sample_games(user: np.ndarray) -> np.ndarray:
        """Two-stage pick per draw: genre ~ taste then game ~ popularity, or noise."""
        r_genre, r_game = rng.random(len(user)), rng.random(len(user))
        g = np.searchsorted(taste_cum, user + r_genre, side="right") - user * n_k
        g = np.minimum(g, n_k - 1)
        x = mass_lo[g] + r_game * genre_mass[g]
        pos = np.clip(np.searchsorted(cum, x, side="right"), starts[g], ends[g] - 1)
        noise = rng.random(len(user)) < NOISE_SHARE
        pos[noise] = np.searchsorted(cum, r_game[noise], side="right")
        return order[np.minimum(pos, n_g - 1)]

    keys = _distinct_picks(sample_games, degree, n_g)
    user, game = keys // n_g, keys % n_g

    # Play hours: log-normal, rising with affinity; low affinity => often unplayed.
    affinity = taste.ravel()[user * n_k + genre[game]]
    n = len(user)
    log_h = 0.3 + 3.0 * affinity + game_len[game] + rng.normal(0.0, 1.0, n)
    hours = np.maximum(np.round(np.exp(log_h), 1), 0.1)
    hours[rng.random(n) < 0.04 + 0.3 * (1.0 - affinity) ** 2] = 0.0
    offsets_us = rng.integers(0, YEAR_US, n)

    # Ids: Steam-like increasing user ids, game ids 10*k+10; readable titles.
    user_ids = STEAM_ID_BASE + np.cumsum(rng.integers(1, 1_000, n_u))
    within = np.empty(n_g, dtype=np.int64)
    within[order] = np.arange(n_g) - np.repeat(starts, ends - starts) + 1
    names = [genre_name(k) for k in range(n_k)]
    titles = pl.Series(
        [f"{names[g]} Game {w:04d}" for g, w in zip(genre.tolist(), within.tolist())]
    )
    return pl.DataFrame(
        {
            "user_id": pl.Series(user_ids[user], dtype=pl.Int64),
            "game_id": pl.Series(10 * game + 10, dtype=pl.Int64),
            "title": titles.gather(game),
            "play_time_hours": pl.Series(hours, dtype=pl.Float64),
            "timestamp": pl.Series(EPOCH_START_US + offsets_us, dtype=pl.Int64).cast(
                pl.Datetime("us")
            ),
        }
    )
