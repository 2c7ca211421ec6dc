from setuptools import find_packages, setup

setup(
    name="hpcmarl",
    version="0.1.0",
    description="Multi-agent reinforcement learning on HPC clusters: MPI actors and Horovod learners",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["hpcmarl", "hpcmarl.*"]),
    install_requires=[
        "numpy>=1.24",
        "torch>=2.1",  # tools/bootstrap.sh installs the 2.13.0 CPU wheel first
        "mpi4py>=3.1",
        "h5py>=3.8",
        "pyyaml>=6",
        "gymnasium>=1.0",
        "pettingzoo>=1.24",
        "mpe2",
        "pygame>=2.3",
        "pymunk>=6.2",
        "matplotlib>=3.6",
        "openskill>=6",  # league ratings (hpcmarl.league.ratings); the v6 models API
        "lbforaging>=2.0",  # Level-Based Foraging (hpcmarl.envs.adapters), pure Python
        "rware>=2.0",  # Multi-Robot Warehouse (hpcmarl.envs.adapters), pure Python
        "open_spiel>=1.5",  # Kuhn/Leduc poker and exact exploitability (hpcmarl.envs.openspiel, league.exploitability)
    ],
    extras_require={
        # Horovod is built from source by tools/bootstrap.sh (it needs the C++17 fix); listing it here
        # would make pip try to build it without that fix.
        "test": ["pytest>=7", "pytest-timeout>=2"],
        "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5"],  # make docs / make docs-serve
        "lint": ["ruff==0.17.6"],  # make lint; pinned so every checkout lints alike (.pre-commit-config.yaml too)
        # batched simulators (docs/environments/batched.md): env.name jaxmarl:<env> / vmas:<scenario>;
        # make setup EXTRAS=jax,vmas installs them next to the CPU torch (tools/bootstrap.sh keeps it)
        "jax": ["jax>=0.4.30", "jaxmarl>=0.2"],
        "vmas": ["vmas>=1.5"],
        # live loggers (output.loggers: tensorboard, wandb, mlflow; docs/operations/tracking.md) and TensorBoard
        # files from `hpcmarl export`; MLflow's SQLite store needs sqlalchemy and alembic beside mlflow-skinny
        "tracking": ["tensorboard>=2.14", "wandb>=0.17", "mlflow-skinny>=3.0", "sqlalchemy>=2.0", "alembic>=1.13"],
        # `hpcmarl compare --by algo` (IQM, bootstrap CIs, performance profiles, probability of improvement);
        # tools/bootstrap.sh also installs marl-eval (id-marl-eval, --no-deps: its pins do not install on 3.11)
        # (pandas < 3: rliable 1.2 needs arch < 8, whose import fails under pandas 3)
        "stats": ["rliable>=1.0", "colorama", "pandas<3"],
        # tools/bench_exploitability.py --openspiel: OpenSpiel's PyTorch NFSP imports dm-tree
        "reference": ["dm-tree>=0.1.8"],
    },
    entry_points={"console_scripts": ["hpcmarl=hpcmarl.__main__:main"]},
)
