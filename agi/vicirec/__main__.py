from vicirec.cli import main

raise SystemExit(main())
