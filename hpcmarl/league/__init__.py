"""League training building blocks: matchmaking, payoff, ratings, scripted players and the AEC actor loop (no MPI)."""
