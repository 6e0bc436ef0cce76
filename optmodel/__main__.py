from optmodel.cli import main

main()
