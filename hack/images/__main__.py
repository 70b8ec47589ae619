from hack.images.cli import main

main()
