"""`gamerec`: the project's command line.

- `gamerec materialize`: rebuild what is stale or missing, and everything downstream of it
  (see `gamerec_assets.materialize`).
- `gamerec settings`: every setting, its variable, default and meaning.
- `gamerec recommend --user ID` / `--games TITLE ...`, `gamerec similar --game TITLE`: top-K
  games from the artifacts alone (`gamerec_assets.core.recommend`). These import neither
  Dagster nor torch, so they answer in well under a second.

Each command imports what it needs when it runs. Settings come from the environment and from
`.env` in the working directory, as for `dagster` commands.
"""

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dotenv import dotenv_values


def load_dotenv_file(path: Path = Path(".env")) -> None:
    """Read `.env` from the working directory as `dagster dev` and `dagster` commands do
    (its values win), so both tools declare the same configuration."""
    if path.is_file():
        values = {k: v for k, v in dotenv_values(path).items() if v is not None}
        os.environ.update(values)
        print(f"Loaded {', '.join(sorted(values))} from {path}", file=sys.stderr)


def materialize_command(args: argparse.Namespace) -> int:
    from gamerec_assets.materialize import materialize_command as run

    load_dotenv_file()
    return run(args)


def _recommender(args: argparse.Namespace):
    from gamerec_assets.core.recommend import Recommender

    load_dotenv_file()
    folder = args.artifacts or os.environ.get("ARTIFACTS_DIR") or "artifacts"
    return Recommender.load(folder)


def _print(recommendations, as_json: bool, heading: str) -> None:
    from gamerec_assets.core.recommend import as_dicts

    if as_json:
        print(json.dumps(as_dicts(recommendations), default=str))
        return
    print(heading)
    width = max((len(r.title) for r in recommendations), default=5)
    for rank, r in enumerate(recommendations, start=1):
        print(f"{rank:>3}. {r.title:<{width}}  {r.score:.4f}")


def recommend_command(args: argparse.Namespace) -> int:
    recommender = _recommender(args)
    if args.user is not None:
        found = recommender.for_user(args.user, args.k)
        heading = f"Top {args.k} for user {args.user} (games they own are left out):"
    else:
        found = recommender.for_new_player(args.games, args.k)
        heading = f"Top {args.k} for a new player who owns {len(args.games)} game(s):"
    _print(found, args.json, heading)
    return 0


def similar_command(args: argparse.Namespace) -> int:
    found = _recommender(args).similar(args.game, args.k)
    _print(found, args.json, f"The {args.k} games nearest to {args.game!r}:")
    return 0


def settings_command(args: argparse.Namespace) -> int:
    from gamerec_assets.core.settings import settings_table

    del args
    print(settings_table())
    return 0


def _serving_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-k", type=int, default=10, help="how many games (default 10)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument(
        "--artifacts", metavar="DIR", help="artifacts folder (default: ARTIFACTS_DIR or artifacts)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gamerec", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    materialize = commands.add_parser(
        "materialize",
        help="materialize what is stale or missing, and everything downstream of it",
        description=(
            "Fingerprint the raw input, compute which assets are stale or missing with Dagster's "
            "staleness machinery, print the plan and materialize exactly those and their "
            "downstream assets in one run, with their asset checks."
        ),
    )
    materialize.add_argument("--dry-run", action="store_true", help="print the plan only")
    materialize.add_argument(
        "--select",
        nargs="+",
        metavar="SELECTION",
        help="narrow to these assets (Dagster selection syntax, e.g. faiss_index, 'group:serving')",
    )
    materialize.add_argument(
        "--all", action="store_true", help="rebuild every selected asset, stale or not"
    )
    materialize.set_defaults(handler=materialize_command)

    recommend = commands.add_parser(
        "recommend", help="top-K games for a known player, or for a new one from owned games"
    )
    who = recommend.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="USER_ID", help="a player in the training data")
    who.add_argument("--games", nargs="+", metavar="TITLE", help="titles a new player owns")
    _serving_options(recommend)
    recommend.set_defaults(handler=recommend_command)

    settings = commands.add_parser(
        "settings", help="every setting: variable, default and meaning (a markdown table)"
    )
    settings.set_defaults(handler=settings_command)

    similar = commands.add_parser("similar", help="games nearest to a game, by item vector")
    similar.add_argument("--game", required=True, metavar="TITLE")
    _serving_options(similar)
    similar.set_defaults(handler=similar_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from gamerec_assets.core.settings import SettingError

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except SettingError as error:  # a bad setting: one line, before anything runs
        print(f"gamerec {args.command}: {error}", file=sys.stderr)
        return 2
    except (KeyError, ValueError, FileNotFoundError) as error:
        if args.command == "materialize":
            raise
        print(f"gamerec {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
