from pantherseg.cli import main

raise SystemExit(main())
