from hack.localcluster.cli import main

main()
