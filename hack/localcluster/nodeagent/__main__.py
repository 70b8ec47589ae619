from hack.localcluster.nodeagent.agent import main

main()
