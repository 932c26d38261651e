from bagula.cli import main

main()
