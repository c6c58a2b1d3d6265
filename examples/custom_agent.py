"""A user-defined agent in a few lines, collected offline from the simulated LLM.

The agent travels between cities: the prompt names the current city, a valid answer is another
city from the list. The simulated LLM gets a landscape over the same cities (known V), so the
least-action fit of the collected transitions can be compared with the truth.

    python examples/custom_agent.py --calls 3000 --store cities.db
    detailed-balance collect --agent examples.custom_agent:city_agent ...   # a real LLM
"""

from __future__ import annotations

import argparse

from detailed_balance.agents import INVALID, Agent, Parsed, RunStore, SimulatedLLM, collect

CITIES = ["PARIS", "LIMA", "OSLO", "CAIRO", "DELHI", "TOKYO", "QUITO", "ROME", "SEOUL", "BERN"]


def city_agent() -> Agent:
    def build_messages(city: str) -> list[dict]:
        return [{"role": "user", "content": f"You are in {city}. Name another capital city "
                 f"to travel to. Answer with the city only."}]  # fmt: skip

    def parse(answer: str, source: str) -> Parsed:
        city = answer.strip().strip(".").upper()
        if city not in CITIES or city == source:
            return Parsed(INVALID, False, "not another city from the list")
        return Parsed(city, True)

    return Agent("cities", ["PARIS"], build_messages, parse, policy="uniform")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--store", default="cities.db")
    args = parser.parse_args()

    # The simulated LLM: finds the city in the prompt, answers from a known landscape.
    sim = SimulatedLLM(CITIES, potential=[0.0, 1.5, -1.0, 0.5, 2.0, -0.5, 1.0, -1.5, 0.2, -0.2],
                       state_pattern=r"You are in ([A-Z]+)\.", name="cities", invalid_rate=0.05)  # fmt: skip
    result = collect(city_agent(), sim.model, args.calls, store=args.store, simulator=sim,
                     concurrency=32, run_id="cities", resume=True)  # fmt: skip
    print(result)

    from scipy.stats import spearmanr

    from detailed_balance.models import least_action

    with RunStore(args.store) as store:
        fit = least_action(store.transitions(run_id="cities", invalid="drop"))
    truth = sim.true_potential()
    rho = spearmanr(fit.potentials[truth.index], truth).statistic
    print(f"Spearman(least-action V, true V) = {rho:.3f}")


if __name__ == "__main__":
    main()
